//! The configuration's tests: every error names file, line and key; defaults; ranges.

use super::*;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/relayguard/relayguard.toml"), text)
}

#[test]
fn empty_file_is_an_error_and_a_near_empty_one_gives_defaults() {
    for empty in ["", "\n\n", "# only a comment\n"] {
        let e = parse(empty).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/relayguard/relayguard.toml:1: the file has no settings (empty or truncated); refusing to run on built-in defaults"
        );
    }
    let c = parse("[senders]\n").unwrap();
    assert_eq!(
        c.milter.socket,
        SocketSpec::Inet("127.0.0.1:8891".parse().unwrap())
    );
    assert_eq!(c.policy.protected.apexes(), ["tugraz.at", "tu-graz.ac.at"]);
    assert!(!c.policy.allow_foreign_senders);
}

#[test]
fn socket_spellings() {
    assert_eq!(
        SocketSpec::parse("unix:/run/rg.sock"),
        Ok(SocketSpec::Unix("/run/rg.sock".into()))
    );
    assert_eq!(
        SocketSpec::parse("local:/run/rg.sock"),
        Ok(SocketSpec::Unix("/run/rg.sock".into()))
    );
    assert_eq!(
        SocketSpec::parse("inet:8891@127.0.0.1"),
        Ok(SocketSpec::Inet("127.0.0.1:8891".parse().unwrap()))
    );
    assert_eq!(
        SocketSpec::parse("inet6:8891@[::1]"),
        Ok(SocketSpec::Inet("[::1]:8891".parse().unwrap()))
    );
    assert_eq!(
        SocketSpec::parse("inet:8891"),
        Ok(SocketSpec::Inet("0.0.0.0:8891".parse().unwrap()))
    );
    assert!(SocketSpec::parse("inet:x@1.2.3.4").is_err());
    assert!(SocketSpec::parse("inet6:1@127.0.0.1").is_err());
    assert!(SocketSpec::parse("unix:rel.sock").is_err());
}

#[test]
fn errors_name_file_line_and_key() {
    let e = parse("[clients]\n\ninternal_networks = [\"10.0.0.0/8\",\n  \"129.27.0.0/33\"]\n")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/relayguard/relayguard.toml:4: key `clients.internal_networks`: `129.27.0.0/33` is not a CIDR network"
    );
    let e = parse("[milter]\nsocket_mode = \"0999\"\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/etc/relayguard/relayguard.toml:2: key `milter.socket_mode`"),
        "{e}"
    );
    let e = parse("[domains]\nprotected = [\"tugraz.at\", \"bad..at\"]\n").unwrap_err();
    assert!(e.to_string().contains(":2: key `domains.protected`"), "{e}");
}

#[test]
fn duplicate_keys_and_tables_are_named_with_their_table_and_first_line() {
    let e = parse(
        "[milter]\nsocket = \"inet:1@127.0.0.1\"\nmax_connections = 5\n\nmax_connections = 6\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/relayguard/relayguard.toml:5: duplicate key `max_connections` in `[milter]` (first at line 3)"
    );
    let e =
        parse("[senders]\nown_local_part = true\n[clients]\n[senders]\nrobots = []\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/relayguard/relayguard.toml:4: duplicate table `[senders]` (first at line 1)"
    );
}

#[test]
fn values_of_the_wrong_type_name_file_line_and_key() {
    for (value, what) in [
        ("-1", "invalid value: integer `-1`, expected a whole number"),
        (
            "1.5",
            "invalid type: floating point `1.5`, expected a whole number",
        ),
        (
            "\"256\"",
            "invalid type: string \"256\", expected a whole number",
        ),
        (
            "true",
            "invalid type: boolean `true`, expected a whole number",
        ),
    ] {
        let text = format!("[milter]\nmax_connections = {value}\n");
        let e = Config::parse(Path::new("/etc/relayguard/relayguard.toml"), &text)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("/etc/relayguard/relayguard.toml:2: key `milter.max_connections`: {what}")
        );
    }
}

#[test]
fn values_that_parse_but_would_open_the_relay_are_refused() {
    let parse = |text: &str| Config::parse(Path::new("/r.toml"), text).map(|_| ());
    for (text, expected) in [
        (
            "[senders]\nrecipient_delimiter = \"\\u0000\"\n",
            "/r.toml:2: key `senders.recipient_delimiter`: \"\\0\" is not one ASCII punctuation character",
        ),
        (
            "[senders]\nrecipient_delimiter = \"a\"\n",
            "key `senders.recipient_delimiter`",
        ),
        (
            "[abuse]\nnetworks = { above = 0 }\n",
            "/r.toml:2: key `abuse.networks.above`: must be above 0",
        ),
        (
            "[abuse]\nvolume_floor = 0.0\n",
            "/r.toml:2: key `abuse.volume_floor`: must be above 0",
        ),
        (
            "[clients]\ninternal_networks = [\"129.27.0.0/16\", \"0.0.0.0/0\"]\n",
            "/r.toml:2: key `clients.internal_networks`: `0.0.0.0/0` is wider than /8",
        ),
        (
            "[clients]\ninternal_networks = [\"::/0\"]\n",
            "`::/0` is wider than /8 (IPv4) or /16 (IPv6)",
        ),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}: {e}");
    }
    parse("[senders]\nrecipient_delimiter = \"-\"\n").unwrap();
    parse("[clients]\ninternal_networks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n").unwrap();
    parse("[clients]\ninternal_networks = [\"0.0.0.0/0\"]\nallow_wide_internal_networks = true\n")
        .unwrap();
}

#[test]
fn numbers_outside_their_documented_range_are_refused() {
    for (text, expected) in [
        (
            "[milter]\nmax_connections = 18446744073709551615\n",
            ":2: key `milter.max_connections`: 18446744073709551615 is out of range: 1..=65536",
        ),
        (
            "[milter]\nmax_connections = 0\n",
            ":2: key `milter.max_connections`: 0 is out of range: 1..=65536",
        ),
        (
            "[milter]\nidle_timeout_secs = 0\n",
            ":2: key `milter.idle_timeout_secs`: 0 is out of range: 1..=7200",
        ),
        (
            "[milter]\nthreads = 0\n",
            ":2: key `milter.threads`: 0 is out of range: 1..=256",
        ),
        (
            "[limits]\n[limits.lock]\nownership_window_minutes = 18446744073709551615\n",
            ":3: key `limits.lock.ownership_window_minutes`: 18446744073709551615 is out of range: 1..=10080",
        ),
        (
            "[limits]\n[limits.external]\nmessages_per_hour = 0\n",
            ":3: key `limits.external.messages_per_hour`: 0 is out of range: 1..=3600000",
        ),
        (
            "[limits]\n[limits.login.alice]\nrecipients_per_message = 100001\n",
            ":3: key `limits.login.alice.recipients_per_message`: 100001 is out of range: 1..=100000",
        ),
        (
            "[limits]\n[[limits.class]]\nname = \"eas\"\nconnections_per_second = 1001\n",
            ":4: key `limits.class.connections_per_second`: 1001 is out of range: 1..=1000",
        ),
        (
            "[limits]\nstore = \"redis\"\n[limits.redis]\ntimeout_ms = 0\n",
            ":4: key `limits.redis.timeout_ms`: 0 is out of range: 1..=60000",
        ),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.ends_with(expected), "{text}: {e}");
    }
    let e = parse("[milter]\nmax_connections = -1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains(":2: "), "{e}");
}

#[test]
fn masquerade_and_rollout_settings_are_checked_with_their_place() {
    let robot = "[senders]\nrobots = [\"robot-web\"]\n\n[senders.masquerade.\"robot-web\"]\naddress = \"noreply@iaik.tugraz.at\"\nfrom = [\"root@*\", \"<>\"]\n";
    let c = parse(robot).unwrap();
    assert!(c.policy.masquerades.rule("robot-web").is_some());
    assert_eq!(
        c.policy.masquerades.original_header.as_deref(),
        Some("X-Original-From")
    );
    for (text, expected) in [
        (
            robot.replace("robots = [\"robot-web\"]", "robots = []"),
            ":4: key `senders.masquerade.robot-web`: `robot-web` is not in senders.robots: only robot accounts are masqueraded",
        ),
        (
            robot.replace("noreply@iaik.tugraz.at", "noreply@gmail.com"),
            ":5: key `senders.masquerade.robot-web.address`: `noreply@gmail.com` is not an address in the protected domains",
        ),
        (
            robot.replace("\"<>\"]", "\"<>\", \"root\"]"),
            ":6: key `senders.masquerade.robot-web.from`: `root` is not a sender pattern",
        ),
        (
            format!("{robot}display_name = \"IAIK\\r\\nBcc: x\"\n"),
            ":7: key `senders.masquerade.robot-web.display_name`: the display name must be",
        ),
        (
            format!("{robot}[rollout]\nmode = \"watch\"\n"),
            ":8: key `rollout.mode`: `watch` is not one of \"enforce\", \"monitor\"",
        ),
        (
            format!("{robot}[rollout]\nwould_refuse_header = \"X-Bad: header\"\n"),
            ":8: key `rollout.would_refuse_header`: `X-Bad: header` is not a header field name",
        ),
        (
            "[dkim]\nheaders = [\"subject\"]\noversign = [\"to\"]\n".to_string(),
            ":3: key `dkim.oversign`: From must be signed (RFC 6376 5.4): add \"from\" to dkim.oversign",
        ),
    ] {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}\n{e}");
    }
}

#[test]
fn abuse_settings_are_checked_with_their_place() {
    let c = parse("[limits]\n[abuse]\nact_at = 3\n[abuse.networks]\nabove = 6\n[abuse.actions]\nexternal = \"lock\"\n").unwrap();
    let rules = c.abuse.unwrap();
    assert_eq!((rules.act_at, rules.networks.above), (3.0, 6.0));
    assert_eq!(rules.action("external"), crate::abuse::Action::Lock);
    assert_eq!(rules.action("internal"), crate::abuse::Action::Log);
    let c = parse("[abuse]\nunfamiliar_factor = 0.25\ncampus_weight = 1.0\n[abuse.strangers_day]\nabove = 120\n").unwrap();
    let rules = c.abuse.unwrap();
    assert_eq!(
        (
            rules.unfamiliar_factor,
            rules.campus_weight,
            rules.strangers_day.above
        ),
        (0.25, 1.0, 120.0)
    );
    for (text, expected) in [
        (
            "[abuse]\nunfamiliar_factor = 0.0\n",
            ":2: key `abuse.unfamiliar_factor`: must be above 0",
        ),
        (
            "[abuse]\ncampus_weight = 1.5\n",
            ":2: key `abuse.campus_weight`: 1.5 is out of range: 0..=1",
        ),
        (
            "[abuse]\n[abuse.strangers_hour]\nabove = 0\n",
            ":3: key `abuse.strangers_hour.above`: must be above 0",
        ),
        (
            "[abuse]\n[abuse.actions]\nexternal = \"lock\"\n",
            ":3: key `abuse.actions.external`: \"lock\" needs [limits], where account locks are kept",
        ),
        (
            "[limits]\n[abuse]\n[abuse.actions]\nexternal = \"ban\"\n",
            ":4: key `abuse.actions.external`: `ban` is not one of \"log\", \"none\", \"tempfail\", \"lock\"",
        ),
        (
            "[abuse]\n[abuse.volume]\nweight = 1000.0\n",
            ":3: key `abuse.volume.weight`: 1000 is out of range: 0..=100",
        ),
        (
            "[abuse]\nipv4_prefix = 4\n",
            ":2: key `abuse.ipv4_prefix`: 4 is out of range: 8..=32",
        ),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}\n{e}");
    }
}

#[test]
fn unknown_keys_are_errors_with_line() {
    let e = parse("[senders]\nown_local_part = true\nallow_forein = true\n").unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("/etc/relayguard/relayguard.toml:3: unknown field `allow_forein`"),
        "{text}"
    );
}

#[test]
fn sources_default_to_todays_order_and_are_checked() {
    let names = |c: &Config| c.sources.iter().map(|s| s.name()).collect::<Vec<_>>();
    assert_eq!(
        names(&parse("[senders]\n").unwrap()),
        ["map", "own_local_part"]
    );
    assert_eq!(
        names(&parse("[senders]\nown_local_part = false\n").unwrap()),
        ["map"]
    );
    let ldap = "[senders.ldap]\nserver_host = \"ldap://127.0.0.1:3389\"\nsearch_base = \"dc=tugraz,dc=at\"\nquery_filter = \"(mail=%s)\"\nresult_attribute = [\"uid\"]\nbind = false\n";
    let c = parse(&format!("[senders]\n{ldap}")).unwrap();
    assert_eq!(names(&c), ["map", "ldap", "own_local_part"]);
    let Some(LdapConfig {
        table: LdapTable::Inline(settings),
        ..
    }) = &c.ldap
    else {
        panic!("inline settings");
    };
    assert_eq!(settings.result_attributes, ["uid"]);
    assert_eq!(settings.bind, None);
    let c = parse(&format!(
        "[senders]\nsources = [\"ldap\", \"own_local_part\"]\n{ldap}positive_ttl_secs = 30\nrobot_filter = \"(objectClass=tugRobot)\"\n"
    ))
    .unwrap();
    assert_eq!(names(&c), ["ldap", "own_local_part"]);
    let tuning = &c.ldap.unwrap().tuning;
    assert_eq!(tuning.positive_ttl, Duration::from_secs(30));
    assert_eq!(
        tuning.robot_filter.as_deref(),
        Some("(objectClass=tugRobot)")
    );
    for (text, expected) in [
        (
            "[senders]\nsources = [\"ldap\"]\n".to_string(),
            ":2: key `senders.sources`: `ldap` is listed but [senders.ldap] is not configured",
        ),
        (
            format!("[senders]\nsources = [\"own_local_part\"]\n{ldap}"),
            ":2: key `senders.sources`: [senders.ldap] is configured but `ldap` is not listed",
        ),
        (
            "[senders]\nsources = [\"map\"]\n".into(),
            ":2: key `senders.sources`: `map` is listed but senders.login_map is not set",
        ),
        (
            "[senders]\nsources = [\"own_local_part\", \"own_local_part\"]\n".into(),
            "`own_local_part` is listed twice",
        ),
        (
            "[senders]\nsources = [\"directory\"]\n".into(),
            "`directory` is not one of \"map\", \"ldap\", \"own_local_part\"",
        ),
        (
            "[senders]\nsources = []\n".into(),
            "needs at least one source",
        ),
        (
            "[senders]\nown_local_part = true\nsources = [\"own_local_part\"]\n".into(),
            "set either sources or own_local_part",
        ),
        (
            format!("[senders]\n{ldap}postfix_table = \"/etc/postfix/ldap.cf\"\n"),
            "set either postfix_table or the ldap_table keys inline",
        ),
        (
            format!("[senders]\n{ldap}chase_referrals = 1\n"),
            ":8: key `senders.ldap.chase_referrals`: unsupported: referrals are not followed",
        ),
        (
            format!("[senders]\n{ldap}serach_base = \"x\"\n"),
            ":8: key `senders.ldap.serach_base`: not an ldap_table(5) parameter",
        ),
        (
            format!("[senders]\n{ldap}pool_size = 0\n"),
            ":8: key `senders.ldap.pool_size`: 0 is out of range: 1..=32",
        ),
        (
            format!("[senders]\n{ldap}robot_filter = \"objectClass=robot\"\n"),
            ":8: key `senders.ldap.robot_filter`: `objectClass=robot` is not a parenthesised LDAP filter",
        ),
        (
            "[senders]\n[senders.ldap]\nrobot_filter = \"(objectClass=x)\"\n".into(),
            "key `senders.ldap`: needs postfix_table or the ldap_table keys",
        ),
    ] {
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}\n{e}");
    }
}
