//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), through hickory's client: how
//! relayguard puts selectors' records into the zone and takes them out again.

use crate::BoxFuture;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Changes to a zone: the seam the publishing pass works through.
pub trait ZoneUpdate: Send + Sync {
    /// Replaces the TXT records at `name` with one record holding `value` (split into
    /// 255-byte strings).
    fn replace_txt<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Deletes the TXT records at `name`.
    fn delete_txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// A TSIG key as `tsig-keygen` writes it (`key "NAME" { algorithm hmac-sha256; secret
/// "BASE64"; };`).
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name, as the server knows it.
    pub name: String,
    /// hmac-sha256, hmac-sha384 or hmac-sha512.
    pub algorithm: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TsigKey {
    /// Parses a key file in named.conf syntax.
    pub fn parse(text: &str) -> Result<Self, String> {
        let after = |word: &str| -> Option<&str> {
            let at = text.find(word)? + word.len();
            Some(text[at..].trim_start())
        };
        let quoted = |s: &str| -> Option<String> {
            let s = s.strip_prefix('"')?;
            Some(s[..s.find('"')?].to_string())
        };
        let name = after("key")
            .and_then(quoted)
            .ok_or("no `key \"NAME\"`: not a tsig-keygen key file")?;
        let algorithm = after("algorithm")
            .map(|s| {
                s.split(|c: char| c == ';' || c.is_whitespace())
                    .next()
                    .unwrap_or("")
            })
            .filter(|a| !a.is_empty())
            .ok_or("no `algorithm`")?
            .to_ascii_lowercase();
        if !matches!(
            algorithm.as_str(),
            "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
        ) {
            return Err(format!(
                "algorithm {algorithm}: use hmac-sha256, hmac-sha384 or hmac-sha512"
            ));
        }
        let secret = after("secret")
            .and_then(quoted)
            .ok_or("no `secret \"…\"`")?;
        let secret = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &secret)
            .map_err(|e| format!("secret is not base64: {e}"))?;
        Ok(TsigKey {
            name,
            algorithm,
            secret,
        })
    }

    fn signer(&self) -> Result<TSigner, String> {
        let algorithm = match self.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            _ => TsigAlgorithm::HmacSha512,
        };
        let name = Name::from_str(&self.name).map_err(|e| e.to_string())?;
        TSigner::new(self.secret.clone(), algorithm, name, 300).map_err(|e| e.to_string())
    }
}

/// Updates sent to a zone's primary over UDP, signed with a TSIG key.
pub struct Updater {
    server: SocketAddr,
    zones: Vec<Name>,
    key: TsigKey,
    ttl: u32,
    timeout: Duration,
}

impl Updater {
    /// Updates for names in `zones` (the longest zone containing a name is its zone), sent
    /// to `server`, records with `ttl`.
    pub fn new(
        server: SocketAddr,
        zones: &[String],
        key: TsigKey,
        ttl: u32,
        timeout: Duration,
    ) -> Result<Self, String> {
        let zones = zones
            .iter()
            .map(|z| Name::from_str(&format!("{}.", z.trim_end_matches('.'))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Updater {
            server,
            zones,
            key,
            ttl,
            timeout,
        })
    }

    fn zone_of(&self, name: &Name) -> Result<Name, String> {
        self.zones
            .iter()
            .filter(|z| z.zone_of(name))
            .max_by_key(|z| z.num_labels())
            .cloned()
            .ok_or_else(|| format!("{name} is in none of the zones relayguard may update"))
    }

    async fn client(&self) -> Result<Client<TokioRuntimeProvider>, String> {
        let stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(self.timeout))
            .with_signer(Some(self.key.signer()?))
            .build();
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(background);
        Ok(client)
    }

    fn fqdn(name: &str) -> Result<Name, String> {
        Name::from_str(&format!("{}.", name.trim_end_matches('.'))).map_err(|e| e.to_string())
    }
}

fn accepted(code: ResponseCode, what: &str) -> Result<(), String> {
    if code == ResponseCode::NoError {
        Ok(())
    } else {
        Err(format!("{what}: the server answered {code}"))
    }
}

impl ZoneUpdate for Updater {
    fn replace_txt<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let name = Self::fqdn(name)?;
            let zone = self.zone_of(&name)?;
            let mut client = self.client().await?;
            let strings: Vec<String> = value
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let old = Record::update0(name.clone(), 0, RecordType::TXT);
            let response = client
                .delete_rrset(old.into_record_of_rdata(), zone.clone())
                .await
                .map_err(|e| e.to_string())?;
            accepted(response.response_code, "delete the old record")?;
            let record = Record::from_rdata(name, self.ttl, RData::TXT(TXT::new(strings)));
            let response = client
                .append(record, zone, false)
                .await
                .map_err(|e| e.to_string())?;
            accepted(response.response_code, "add the record")
        })
    }

    fn delete_txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let name = Self::fqdn(name)?;
            let zone = self.zone_of(&name)?;
            let mut client = self.client().await?;
            let mut old = Record::update0(name, 0, RecordType::TXT).into_record_of_rdata();
            old.dns_class = DNSClass::IN;
            let response = client
                .delete_rrset(old, zone)
                .await
                .map_err(|e| e.to_string())?;
            accepted(response.response_code, "delete the record")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let key = TsigKey::parse(
            "key \"relayguard-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0IHNlY3JldCBzZWNyZXQ=\";\n};\n",
        )
        .unwrap();
        assert_eq!(key.name, "relayguard-key");
        assert_eq!(key.algorithm, "hmac-sha256");
        assert_eq!(key.secret, b"secret secret secret");
        assert!(
            TsigKey::parse("key \"k\" { algorithm hmac-md5; secret \"AA==\"; };")
                .unwrap_err()
                .contains("hmac-md5")
        );
        assert!(TsigKey::parse("nothing").is_err());
        assert!(
            !format!("{key:?}").contains("secret secret"),
            "the secret is not logged"
        );
    }
}
