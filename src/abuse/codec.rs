//! A login's signal state as bytes, for the Redis book: a fixed little-endian layout behind a
//! version byte, so every relay of a cluster reads what another wrote. A state that does not
//! decode (another version, a cut value) is taken as empty, never as an error on the message
//! path.

use super::state::{Bounded, HOURS, Hour, LoginState, QUARTERS, SKETCH_BITS, Sketch};

const VERSION: u8 = 1;
const WORDS: usize = (SKETCH_BITS / 64) as usize;

/// The state's bytes.
pub fn encode(state: &LoginState) -> Vec<u8> {
    let mut out = Vec::with_capacity(3_200);
    out.push(VERSION);
    out.extend_from_slice(&state.hour.to_le_bytes());
    for h in &state.hours {
        out.extend_from_slice(&h.hour.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&h.messages.to_le_bytes());
        out.extend_from_slice(&h.new_capped.to_le_bytes());
        out.extend_from_slice(&h.domains.to_le_bytes());
    }
    out.extend_from_slice(&state.quarter.to_le_bytes());
    for s in &state.strangers {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for set in state.networks.iter().chain(&state.domains) {
        out.push(set.0.len() as u8);
        for v in &set.0 {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for f in [state.baseline, state.domains_baseline, state.new_baseline] {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out.extend_from_slice(&state.folded.to_le_bytes());
    out.push(state.familiar.len() as u8);
    for (net, first, last) in &state.familiar {
        out.extend_from_slice(&net.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&last.to_le_bytes());
    }
    for sketch in &state.sketches {
        for w in sketch.0.iter() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out.extend_from_slice(&state.fill.to_le_bytes());
    out.extend_from_slice(&state.sketch_started.to_le_bytes());
    out.extend_from_slice(&state.last_ms.to_le_bytes());
    out
}

/// Reads bytes [`encode`] wrote; `None` when they are not such bytes.
pub fn decode(bytes: &[u8]) -> Option<LoginState> {
    let mut r = Reader(bytes);
    if r.take::<1>()? != [VERSION] {
        return None;
    }
    let mut state = LoginState {
        hour: r.i64()?,
        ..LoginState::default()
    };
    for h in 0..HOURS {
        let hour = r.i64()?;
        state.hours[h] = Hour {
            hour: (hour != i64::MIN).then_some(hour),
            messages: u32::from_le_bytes(r.take()?),
            new_capped: u32::from_le_bytes(r.take()?),
            domains: u16::from_le_bytes(r.take()?),
        };
    }
    state.quarter = r.i64()?;
    for q in 0..QUARTERS {
        state.strangers[q] = f32::from_le_bytes(r.take()?);
    }
    let mut sets: [Bounded; 4] = Default::default();
    for set in &mut sets {
        let n = r.take::<1>()?[0] as usize;
        if n > Bounded::MAX {
            return None;
        }
        for _ in 0..n {
            set.0.push(u64::from_le_bytes(r.take()?));
        }
    }
    let [n0, n1, d0, d1] = sets;
    state.networks = [n0, n1];
    state.domains = [d0, d1];
    state.baseline = f64::from_le_bytes(r.take()?);
    state.domains_baseline = f64::from_le_bytes(r.take()?);
    state.new_baseline = f64::from_le_bytes(r.take()?);
    state.folded = r.i64()?;
    let n = r.take::<1>()?[0] as usize;
    for _ in 0..n {
        let net = u64::from_le_bytes(r.take()?);
        let first = r.i64()?;
        state.familiar.push((net, first, r.i64()?));
    }
    for sketch in &mut state.sketches {
        let mut words = Box::new([0u64; WORDS]);
        for w in words.iter_mut() {
            *w = u64::from_le_bytes(r.take()?);
        }
        *sketch = Sketch(words);
    }
    state.fill = u32::from_le_bytes(r.take()?);
    state.sketch_started = r.i64()?;
    state.last_ms = r.i64()?;
    r.0.is_empty().then_some(state)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abuse::Rules;
    use crate::abuse::book::Observation;

    #[test]
    fn a_state_reads_back_as_it_was_and_garbage_reads_as_nothing() {
        let rules = Rules::default();
        let mut state = LoginState::default();
        let h = 3_600_000;
        for i in 0..300 {
            let rcpts = [
                format!("r{i}@d{}.example", i % 40),
                "friend@tugraz.at".to_string(),
            ];
            let mut seen = Observation::new(None, &rcpts, &rules, Some(3), &|d| d == "tugraz.at");
            seen.network = Some(format!("net{}", i % 7));
            state.observe(&seen, 1_000 * h + i * 400_000, &rules);
        }
        let bytes = encode(&state);
        assert!(bytes.len() < 6_000, "{}", bytes.len());
        assert!(decode(&bytes) == Some(state.clone()));
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(&[2]).is_none());
        assert!(decode(b"").is_none());
        let mut more = bytes;
        more.push(0);
        assert!(decode(&more).is_none());
    }
}
