//! What a sender decision says: permitted (and as what), or refused, which field and why,
//! with the SMTP code each reason maps to.

use super::address::AddressError;
use super::hosts::ServerPermit;
use super::mailbox::Ambiguity;
use super::senders::Ownership;
use std::fmt;

/// Which part of the transaction a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The envelope sender (MAIL FROM).
    MailFrom,
    /// An envelope recipient (RCPT TO).
    Rcpt,
    /// The From header.
    From,
    /// The Sender header.
    Sender,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::MailFrom => "MAIL FROM",
            Field::Rcpt => "RCPT TO",
            Field::From => "From",
            Field::Sender => "Sender",
        })
    }
}

/// Why a message was refused; [`Reason::code`] is stable for logs and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Unauthenticated client outside the internal networks.
    AuthRequired,
    /// Unauthenticated internal client writing to a recipient outside the protected domains.
    RecipientNotProtected,
    /// Unauthenticated internal client without the host name it needs.
    UnknownClientName,
    /// The login does not own a protected address it uses.
    SenderNotOwned,
    /// An authenticated login uses an address outside the protected domains.
    ForeignSender,
    /// No From header.
    FromMissing,
    /// A From or Sender header that cannot be read unambiguously.
    AmbiguousHeader(Ambiguity),
    /// An envelope address that is malformed or uses forbidden syntax.
    MalformedAddress(AddressError),
}

impl Reason {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::AuthRequired => "auth_required",
            Reason::RecipientNotProtected => "recipient_not_protected",
            Reason::UnknownClientName => "unknown_client_name",
            Reason::SenderNotOwned => "sender_not_owned",
            Reason::ForeignSender => "foreign_sender",
            Reason::FromMissing => "from_missing",
            Reason::AmbiguousHeader(_) => "ambiguous_header",
            Reason::MalformedAddress(_) => "malformed_address",
        }
    }
}

/// A policy refusal: the reason, the field it concerns and the SMTP reply text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// Which field.
    pub field: Field,
    /// Human-readable text for the SMTP reply (without codes).
    pub text: String,
}

impl Refusal {
    /// The SMTP reply code and enhanced status code for this refusal.
    pub fn smtp_codes(&self) -> (&'static str, &'static str) {
        match self.reason {
            Reason::MalformedAddress(_) if self.field == Field::MailFrom => ("553", "5.1.7"),
            Reason::MalformedAddress(_) => ("553", "5.1.3"),
            // As Postfix's reject_unknown_client_hostname: DNS trouble is often temporary.
            Reason::UnknownClientName => ("450", "4.7.25"),
            _ => ("550", "5.7.1"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, status) = self.smtp_codes();
        write!(f, "{code} {status} {}", self.text)
    }
}

/// Why a sender address was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permit {
    /// The null sender `<>`.
    NullSender,
    /// Unauthenticated internal server: its own name, or a status sender.
    Server(ServerPermit),
    /// The login owns the protected address.
    Owned(Ownership),
    /// Outside the protected domains, and the configuration allows that.
    ForeignAllowed,
    /// A recipient inside the protected domains, or any recipient of an authenticated login.
    Recipient,
    /// No header of this kind.
    Absent,
}

impl fmt::Display for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permit::NullSender => f.write_str("null sender"),
            Permit::Server(ServerPermit::OwnName(host)) => {
                write!(f, "unauthenticated server {host} sending as itself")
            }
            Permit::Server(ServerPermit::StatusSender) => {
                f.write_str("a configured status sender of unauthenticated servers")
            }
            Permit::Owned(Ownership::MapEntry(key)) => {
                write!(f, "owned through sender map entry `{key}`")
            }
            Permit::Owned(Ownership::Directory { key, entry }) => {
                write!(
                    f,
                    "owned through directory entry `{entry}` (lookup `{key}`)"
                )
            }
            Permit::Owned(Ownership::OwnLocalPart) => {
                f.write_str("owned: login matches the local part")
            }
            Permit::Owned(Ownership::NotOwned(_)) => f.write_str("not owned"),
            Permit::ForeignAllowed => {
                f.write_str("outside the protected domains, allowed unsigned by configuration")
            }
            Permit::Recipient => f.write_str("recipient allowed"),
            Permit::Absent => f.write_str("absent"),
        }
    }
}
