//! Things going wrong while mail flows, once each, at fixed points of the run: a relayguard
//! killed, a whole relay stopped, the Redis primary killed, the directory stopped and then
//! frozen, DNS stopped while a key rotation is due (and the rotation published when it is
//! back), the configuration edited under a storm of SIGHUPs, an audit disk full.

use crate::model::Size;
use crate::world::{World, relayguard};
use std::time::{Duration, Instant};

/// One fault as it happened: milliseconds after the start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Short name (`relayguard_killed`, …).
    pub fault: &'static str,
    /// What was done.
    pub what: String,
    /// Which relay it hit (none: a shared service).
    pub relay: Option<usize>,
    pub start_ms: u64,
    pub end_ms: u64,
}

async fn until(start: Instant, size: Size, fraction: f64) {
    let at = start + size.window.mul_f64(fraction);
    tokio::time::sleep_until(at.into()).await;
}

fn ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs the schedule; returns what happened, in order.
pub async fn run(world: &mut World, size: Size, start: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    let down = size.down;

    // 1. relayguard on relay1 crashes; Postfix answers 451 (milter_default_action =
    //    tempfail) until it is back.
    until(start, size, 0.07).await;
    let t = ms(start);
    blocking(|| world.relays[0].crash());
    tokio::time::sleep(Duration::from_secs(5)).await;
    blocking(|| world.relays[0].daemon.restart());
    events.push(Event {
        fault: "relayguard_killed",
        what: "SIGKILL to relay1's relayguard, restarted after 5 s".into(),
        relay: Some(0),
        start_ms: t,
        end_ms: ms(start),
    });

    // 2. DNS goes down just as a rotation is due: the successor's record cannot be
    //    published until it is back; the current selectors sign meanwhile.
    until(start, size, 0.14).await;
    let t = ms(start);
    blocking(|| world.bind.stop());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let active = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(35);
    blocking(|| world.rotate("rsa-c2", &active.to_string()));
    let config = world.relays[0].config();
    let mut failed_publishes = 0;
    let back = Instant::now() + Duration::from_secs(20);
    let mut bind_back = None;
    let published = loop {
        if bind_back.is_none() && Instant::now() >= back {
            blocking(|| world.bind.restart());
            bind_back = Some(ms(start));
        }
        match blocking(|| relayguard(&["keys", "publish", "--config", config.to_str().unwrap()])) {
            Ok(_) if bind_back.is_some() => break ms(start),
            Ok(out) => panic!("publishing succeeded with BIND down: {out}"),
            Err(_) => failed_publishes += 1,
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    events.push(Event {
        fault: "dns_down_during_rotation",
        what: format!(
            "BIND stopped; successor rsa-c2 due at {active}; {failed_publishes} publish runs failed, published at {:.0} s",
            published as f64 / 1000.0
        ),
        relay: None,
        start_ms: t,
        end_ms: bind_back.unwrap_or(published),
    });

    // 3. A whole relay host goes out of service; the balancer sends its clients to the
    //    other; its queue is delivered when it is back.
    until(start, size, 0.31).await;
    let t = ms(start);
    blocking(|| world.relays[1].postfix.stop());
    tokio::time::sleep(down).await;
    blocking(|| world.relays[1].postfix.start_again());
    events.push(Event {
        fault: "relay_stopped",
        what: format!("relay2's Postfix stopped for {} s", down.as_secs()),
        relay: Some(1),
        start_ms: t,
        end_ms: ms(start),
    });

    // 4. The Redis primary's host fails; the Sentinels promote the replica.
    until(start, size, 0.45).await;
    let t = ms(start);
    let primary = world.sentinels.primary;
    blocking(|| world.sentinels.kill(primary));
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.sentinels.current_primary() == Some(primary) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    events.push(Event {
        fault: "redis_primary_killed",
        what: format!(
            "SIGKILL to the Redis primary; the Sentinels name {:?}",
            world.sentinels.current_primary()
        ),
        relay: None,
        start_ms: t,
        end_ms: ms(start),
    });

    // 5. The directory is stopped, then (back) frozen.
    until(start, size, 0.53).await;
    let t = ms(start);
    blocking(|| world.slapd.stop());
    tokio::time::sleep(down).await;
    blocking(|| world.slapd.restart());
    events.push(Event {
        fault: "directory_stopped",
        what: format!("slapd stopped for {} s", down.as_secs()),
        relay: None,
        start_ms: t,
        end_ms: ms(start),
    });
    until(start, size, 0.66).await;
    let t = ms(start);
    blocking(|| world.slapd.freeze());
    tokio::time::sleep(down).await;
    world.slapd.thaw();
    events.push(Event {
        fault: "directory_frozen",
        what: format!("slapd frozen (SIGSTOP) for {} s", down.as_secs()),
        relay: None,
        start_ms: t,
        end_ms: ms(start),
    });

    // 6. An operator edits relayguard.toml in place and sends SIGHUP twenty times.
    until(start, size, 0.78).await;
    let t = ms(start);
    for relay in &world.relays {
        let path = relay.config();
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen(
            "require_name = \"verified\"\n",
            "require_name = \"verified\"\nstatus_senders = [\"monitoring@tugraz.at\"]\n",
            1,
        );
        std::fs::write(&path, edited).unwrap();
    }
    for _ in 0..20 {
        for relay in &world.relays {
            relay.daemon.signal(libc::SIGHUP);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    events.push(Event {
        fault: "reload_storm",
        what: "relayguard.toml edited in place on both relays, 20 SIGHUPs each in 2 s".into(),
        relay: None,
        start_ms: t,
        end_ms: ms(start),
    });

    // 7. relay2's audit disk fills up; accepted mail waits (451) until there is room.
    until(start, size, 0.83).await;
    let t = ms(start);
    let filled = blocking(|| world.relays[1].disk.as_ref().expect("a small disk").fill());
    tokio::time::sleep(down).await;
    world.relays[1].disk.as_ref().unwrap().free();
    events.push(Event {
        fault: "audit_disk_full",
        what: format!(
            "relay2's audit disk filled ({} KB) for {} s",
            filled / 1024,
            down.as_secs()
        ),
        relay: Some(1),
        start_ms: t,
        end_ms: ms(start),
    });
    events
}
