//! The sender policy: pure decisions on who may send what, from macros, envelope and headers.
//!
//! Nothing here touches sockets, files or clocks; the milter layer feeds it and maps its
//! [`Refusal`]s to SMTP replies.

pub mod address;
pub mod display;
pub mod domains;
pub mod hosts;
pub mod mailbox;
pub mod masquerade;
pub mod refusal;
pub mod senders;

pub use refusal::{Field, Permit, Reason, Refusal};

use address::{Address, AddressError};
use domains::ProtectedDomains;
use hosts::{HostName, ServerPermit, ServerSenders};
use ipnet::IpNet;
use mailbox::{Ambiguity, HeaderSet};
use senders::{LoginRules, Owners, Ownership};

/// What the ownership sources said, as the pure decision reads it. The session asks the
/// sources beforehand about the addresses [`Policy::ownership_needed`] and
/// [`Policy::claim_needed`] name; an address not asked about is not owned and not claimed.
pub trait Answers {
    /// Whether `login` (normalised) owns the protected `address`, and why.
    fn ownership(&self, login: &str, address: &Address) -> Ownership;
    /// The entry that gives `address` to some login, if any.
    fn claim(&self, address: &Address) -> Option<String>;
}

/// The policy's own sender map as the only source.
struct MapAnswers<'p>(&'p Policy);

impl Answers for MapAnswers<'_> {
    fn ownership(&self, login: &str, address: &Address) -> Ownership {
        self.0.owners.ownership(login, address, &self.0.protected)
    }

    fn claim(&self, address: &Address) -> Option<String> {
        self.0.owners.claim(address)
    }
}
use std::net::IpAddr;

/// The whole sender policy, built from configuration and the sender-login map.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Domains whose addresses need ownership (and get signed).
    pub protected: ProtectedDomains,
    /// Networks whose unauthenticated clients may send status mail to protected domains.
    pub internal_networks: Vec<IpNet>,
    /// Ownership rules.
    pub owners: Owners,
    /// Login normalisation.
    pub logins: LoginRules,
    /// Whether authenticated users may use addresses outside the protected domains (unsigned).
    pub allow_foreign_senders: bool,
    /// What unauthenticated internal servers need and may use.
    pub servers: ServerSenders,
    /// Robots' automatic sender forms and the addresses they become.
    pub masquerades: masquerade::Masquerades,
}

/// What the MTA told us about the client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client<'a> {
    /// The client's IP address, when known.
    pub addr: Option<IpAddr>,
    /// `{auth_authen}`, when the session authenticated.
    pub login: Option<&'a str>,
    /// The client's host name as the MTA resolved it.
    pub name: HostName<'a>,
}

/// How the policy sees a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKind {
    /// An authenticated session: the login as given and its normalised form.
    Authenticated {
        /// `{auth_authen}` as the MTA sent it.
        given: String,
        /// The normalised login used for ownership.
        login: String,
    },
    /// Unauthenticated, from an internal network.
    Internal {
        /// Its host name, if it has one the policy may rely on (normalised).
        host: Option<String>,
    },
    /// Unauthenticated, from anywhere else (or an unknown address).
    External,
}

impl ClientKind {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ClientKind::Authenticated { .. } => "authenticated",
            ClientKind::Internal { .. } => "internal",
            ClientKind::External => "external",
        }
    }
}

/// The result of the header stage: the sender addresses and why each was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSenders {
    /// The From mailbox, when present.
    pub from: Option<Address>,
    /// Why the From mailbox was allowed.
    pub from_permit: Permit,
    /// The Sender mailbox, when present.
    pub sender: Option<Address>,
    /// Why the Sender mailbox was allowed.
    pub sender_permit: Permit,
}

impl Policy {
    /// Classifies the client from its address and `{auth_authen}`.
    pub fn classify(&self, client: Client<'_>) -> ClientKind {
        match client.login.map(str::trim).filter(|l| !l.is_empty()) {
            Some(given) => ClientKind::Authenticated {
                given: given.to_string(),
                login: self.logins.normalise(given),
            },
            None if client.addr.is_some_and(|a| self.is_internal(a)) => ClientKind::Internal {
                host: self.servers.usable_name(client.name),
            },
            None => ClientKind::External,
        }
    }

    /// Whether an address lies in the internal networks (IPv4-mapped IPv6 counts as IPv4).
    pub fn is_internal(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        self.internal_networks.iter().any(|n| n.contains(&addr))
    }

    /// The login whose ownership of `address` the decision needs: an authenticated client
    /// using a protected address. Its answer comes from an ownership source.
    pub fn ownership_needed<'k>(&self, kind: &'k ClientKind, address: &Address) -> Option<&'k str> {
        match kind {
            ClientKind::Authenticated { login, .. }
                if address.domain().is_some_and(|d| self.protected.covers(d)) =>
            {
                Some(login)
            }
            _ => None,
        }
    }

    /// Whether the decision needs to know who else may own `address`: an unauthenticated
    /// server using an address of its own name (which must not be anyone's).
    pub fn claim_needed(&self, kind: &ClientKind, address: &Address) -> bool {
        match kind {
            ClientKind::Internal { host } => matches!(
                self.servers
                    .permit(host.as_deref(), address, &self.protected),
                Some(ServerPermit::OwnName(_))
            ),
            _ => false,
        }
    }

    /// Who owns what according to this policy's own sender map and login rules.
    fn own_owners(&self) -> MapAnswers<'_> {
        MapAnswers(self)
    }

    /// MAIL FROM: refuses unauthenticated external clients, internal ones without the host
    /// name they need, and envelope senders the client may not use.
    pub fn check_mail(&self, kind: &ClientKind, mail_from: &str) -> Result<Permit, Refusal> {
        self.check_mail_with(kind, mail_from, &self.own_owners())
    }

    /// As [`Policy::check_mail`], with the ownership sources' `answers`.
    pub fn check_mail_with(
        &self,
        kind: &ClientKind,
        mail_from: &str,
        answers: &dyn Answers,
    ) -> Result<Permit, Refusal> {
        match kind {
            ClientKind::External => {
                return Err(Refusal {
                    reason: Reason::AuthRequired,
                    field: Field::MailFrom,
                    text:
                        "authentication required: this relay accepts mail only from authenticated users"
                            .into(),
                });
            }
            ClientKind::Internal { host: None } if self.servers.name_required() => {
                return Err(Refusal {
                    reason: Reason::UnknownClientName,
                    field: Field::MailFrom,
                    text: "Client host rejected: cannot find your hostname".into(),
                });
            }
            _ => {}
        }
        let address = Address::parse_envelope(mail_from).map_err(|e| Refusal {
            text: format!(
                "<{}>: malformed sender address: {e}",
                mail_from.trim_matches(['<', '>'])
            ),
            reason: Reason::MalformedAddress(e),
            field: Field::MailFrom,
        })?;
        match address {
            None => Ok(Permit::NullSender),
            Some(address) => self.check_sender(kind, Field::MailFrom, &address, answers),
        }
    }

    /// RCPT TO: unauthenticated internal clients may write only to protected domains.
    pub fn check_rcpt(&self, kind: &ClientKind, rcpt: &str) -> Result<Permit, Refusal> {
        let malformed = |e: AddressError| Refusal {
            text: format!(
                "<{}>: malformed recipient address: {e}",
                rcpt.trim_matches(['<', '>'])
            ),
            reason: Reason::MalformedAddress(e),
            field: Field::Rcpt,
        };
        let address = Address::parse_envelope(rcpt)
            .map_err(malformed)?
            .ok_or_else(|| malformed(AddressError::Empty))?;
        match kind {
            ClientKind::Authenticated { .. } => Ok(Permit::Recipient),
            ClientKind::Internal { .. }
                if address.domain().is_some_and(|d| self.protected.covers(d)) =>
            {
                Ok(Permit::Recipient)
            }
            ClientKind::Internal { .. } => Err(Refusal {
                reason: Reason::RecipientNotProtected,
                field: Field::Rcpt,
                text: format!(
                    "<{address}>: unauthenticated clients may send only to recipients in the protected domains; authenticate to send elsewhere"
                ),
            }),
            ClientKind::External => Err(Refusal {
                reason: Reason::AuthRequired,
                field: Field::Rcpt,
                text:
                    "authentication required: this relay accepts mail only from authenticated users"
                        .into(),
            }),
        }
    }

    /// End of headers: exactly one unambiguous From (and at most one Sender); for
    /// authenticated logins both must be owned when protected.
    pub fn check_headers(
        &self,
        kind: &ClientKind,
        headers: &HeaderSet,
    ) -> Result<HeaderSenders, Refusal> {
        self.check_headers_with(kind, headers, &self.own_owners())
    }

    /// As [`Policy::check_headers`], with the ownership sources' `answers`.
    pub fn check_headers_with(
        &self,
        kind: &ClientKind,
        headers: &HeaderSet,
        answers: &dyn Answers,
    ) -> Result<HeaderSenders, Refusal> {
        let ambiguous = |field: Field, a: Ambiguity| Refusal {
            text: format!("{field} header {a}; refusing an ambiguous sender"),
            reason: Reason::AmbiguousHeader(a),
            field,
        };
        let from = headers.from().map_err(|a| ambiguous(Field::From, a))?;
        let sender = headers.sender().map_err(|a| ambiguous(Field::Sender, a))?;
        let from_permit = match (&from, kind) {
            (Some(address), _) => self.check_sender(kind, Field::From, address, answers)?,
            (None, ClientKind::Authenticated { .. }) => {
                return Err(Refusal {
                    reason: Reason::FromMissing,
                    field: Field::From,
                    text: "message has no From header".into(),
                });
            }
            (None, _) => Permit::Absent,
        };
        let sender_permit = match &sender {
            Some(address) => self.check_sender(kind, Field::Sender, address, answers)?,
            None => Permit::Absent,
        };
        Ok(HeaderSenders {
            from,
            from_permit,
            sender,
            sender_permit,
        })
    }

    /// One sender address (envelope or header) against the client.
    fn check_sender(
        &self,
        kind: &ClientKind,
        field: Field,
        address: &Address,
        answers: &dyn Answers,
    ) -> Result<Permit, Refusal> {
        let (given, login) = match kind {
            ClientKind::Authenticated { given, login } => (given, login),
            ClientKind::Internal { host } => {
                return match self
                    .servers
                    .permit(host.as_deref(), address, &self.protected)
                {
                    Some(ServerPermit::OwnName(host)) => match self.claimant(address, answers) {
                        Some(entry) => Err(Refusal {
                            reason: Reason::SenderNotOwned,
                            field,
                            text: format!(
                                "<{address}> belongs to an account ({entry}); unauthenticated host {host} may send only as itself, never as an address a person or robot owns"
                            ),
                        }),
                        None => Ok(Permit::Server(ServerPermit::OwnName(host))),
                    },
                    Some(permit) => Ok(Permit::Server(permit)),
                    None => Err(Refusal {
                        reason: Reason::SenderNotOwned,
                        field,
                        text: match host {
                            Some(host) => format!(
                                "<{address}> is not an address of unauthenticated host {host}; a server without authentication may send only as itself"
                            ),
                            None => format!(
                                "<{address}> may not be used by an unauthenticated client without a host name; authenticate to send"
                            ),
                        },
                    }),
                };
            }
            ClientKind::External => {
                return Err(Refusal {
                    reason: Reason::AuthRequired,
                    field,
                    text: "authentication required: this relay accepts mail only from authenticated users".into(),
                });
            }
        };
        let protected = address.domain().is_some_and(|d| self.protected.covers(d));
        if !protected {
            return if self.allow_foreign_senders {
                Ok(Permit::ForeignAllowed)
            } else {
                Err(Refusal {
                    reason: Reason::ForeignSender,
                    field,
                    text: format!(
                        "<{address}> is outside the protected domains and may not be used by authenticated user {given}"
                    ),
                })
            };
        }
        match answers.ownership(login, address) {
            Ownership::NotOwned(_) => Err(Refusal {
                reason: Reason::SenderNotOwned,
                field,
                text: format!("<{address}> is not owned by authenticated user {given}"),
            }),
            owned => Ok(Permit::Owned(owned)),
        }
    }

    /// Who may own `address` besides an unauthenticated server: an ownership source's entry,
    /// or a robot whose automatic mail is masqueraded to it.
    fn claimant(&self, address: &Address, answers: &dyn Answers) -> Option<String> {
        let canonical = address.canonical();
        self.masquerades
            .rules()
            .find(|(_, rule)| rule.address.canonical() == canonical)
            .map(|(login, _)| format!("masquerade address of {login}"))
            .or_else(|| answers.claim(address))
    }

    /// The masquerade rule of a client: a robot account's, if it has one.
    pub fn masquerade_rule(&self, kind: &ClientKind) -> Option<&masquerade::Rule> {
        match kind {
            ClientKind::Authenticated { login, .. } => self.masquerades.rule(login),
            _ => None,
        }
    }

    /// Runs every stage over a whole transaction, stopping at the first refusal. A robot's
    /// automatic senders are masqueraded first, as the relay does when the MTA allows it.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        self.decide_with(request, &self.own_owners())
    }

    /// As [`Policy::decide`], with the ownership sources' `answers`.
    pub fn decide_with(&self, request: &Request<'_>, answers: &dyn Answers) -> Decision {
        let kind = self.classify(request.client);
        let rule = self.masquerade_rule(&kind);
        let mut rewrites = Vec::new();
        let mail_from = match rule.and_then(|r| r.rewrite_envelope(request.mail_from)) {
            Some(envelope) => {
                rewrites.push(format!(
                    "MAIL FROM {} becomes {envelope}",
                    request.mail_from
                ));
                envelope
            }
            None => request.mail_from.to_string(),
        };
        let headers = request.headers.clone().map(|mut headers| {
            if let Some(rule) = rule {
                for (name, rewritten) in [
                    ("From", rule.rewrite_from(&headers)),
                    ("Sender", rule.rewrite_sender(&headers)),
                ] {
                    if let Some((original, value)) = rewritten {
                        rewrites.push(format!("{name} <{original}> becomes {value}"));
                        headers.replace(name.as_bytes(), value.as_bytes());
                    }
                }
            }
            headers
        });
        let mut steps = Vec::new();
        let outcome = (|| {
            let permit = self.check_mail_with(&kind, &mail_from, answers)?;
            steps.push((Field::MailFrom, mail_from.clone(), permit));
            for rcpt in &request.rcpts {
                let permit = self.check_rcpt(&kind, rcpt)?;
                steps.push((Field::Rcpt, rcpt.to_string(), permit));
            }
            if let Some(headers) = &headers {
                let senders = self.check_headers_with(&kind, headers, answers)?;
                let show =
                    |a: &Option<Address>| a.as_ref().map(|a| format!("<{a}>")).unwrap_or_default();
                steps.push((Field::From, show(&senders.from), senders.from_permit));
                steps.push((Field::Sender, show(&senders.sender), senders.sender_permit));
            }
            Ok(())
        })();
        Decision {
            kind,
            rewrites,
            steps,
            outcome,
        }
    }
}

/// A whole transaction for [`Policy::decide`].
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The client.
    pub client: Client<'a>,
    /// The MAIL FROM argument (`<a@b>` or `<>`).
    pub mail_from: &'a str,
    /// RCPT TO arguments.
    pub rcpts: Vec<&'a str>,
    /// The message headers, when a message is given.
    pub headers: Option<HeaderSet>,
}

/// The outcome of [`Policy::decide`], with the reasoning for each field that passed.
#[derive(Debug, Clone)]
pub struct Decision {
    /// How the client was classified.
    pub kind: ClientKind,
    /// What masquerading rewrote (`MAIL FROM <root@web1> becomes <noreply@...>`).
    pub rewrites: Vec<String>,
    /// Each checked field, its value and why it passed.
    pub steps: Vec<(Field, String, Permit)>,
    /// `Ok` when the message would be accepted.
    pub outcome: Result<(), Refusal>,
}
