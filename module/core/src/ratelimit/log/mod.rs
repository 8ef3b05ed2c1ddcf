//! The sliding-window log: an exact record of what was admitted and when.
//!
//! Pure Rust with no Redis import: every operation takes `now_ms` as an argument, so the whole
//! algorithm is tested as tables of (time, request) -> reply.
//!
//! An entry recorded at `t` counts in a window of `w` ms while `now < t + w`: an entry exactly
//! `w` ms old has left the window. A request of cost `c` is allowed iff, for every policy,
//! the cost recorded in its window plus `c` is at most its limit.
//!
//! This file is the algorithm (peek, check, record) over a read-only `View` of the entries,
//! whatever their layout; `layout` holds the memory layout (the inline, mid and large
//! representations and the moves between them).
//!
//!
//! Sums are exact. A difference of wrapping cumulative costs is exact while the live entries
//! cost at most `u64::MAX` in all; costs are at most `MAX_AMOUNT` (2^63-1), but windows and
//! limits vary between calls, so the live total can pass that (two entries of 2^63-1 made
//! under a 1 ms window, then a request under a longer one). A large log whose live total does
//! is marked `wide` (a flag in its 32 inline bytes, so no memory is added), and while it is,
//! sums are taken entry by entry in u128 and saturate at `u64::MAX`, which no limit reaches:
//! such a window denies. Unit logs and logs that stay below 2^64 never take that path.

/// The longest window (and so the longest span of live entries) a log supports: offsets are u32.
pub const MAX_WINDOW_MS: u64 = u32::MAX as u64;

/// Largest limit or cost: replies are signed 64-bit integers. A decoded log holds no larger
/// cost either.
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// One `(limit, window_ms)` rule; `window_ms` is in `1..=MAX_WINDOW_MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub limit: u64,
    pub window_ms: u64,
}

/// The reply of RATELIMIT.CHECK / RATELIMIT.PEEK, field for field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// 0 when allowed; exact ms until the same request would be allowed; -1 if never.
    pub retry_after_ms: i64,
    pub reset_after_ms: u64,
}

/// One policy's state as the `POLICIES` flag reports it: its limit and window, what it still
/// allows and the ms until its window holds nothing recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyState {
    pub limit: u64,
    pub window_ms: u64,
    pub remaining: u64,
    pub reset_after_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log(Repr);

fn entry_cost(cum: &[u64], i: usize) -> u64 {
    if i == 0 {
        cum[0]
    } else {
        cum[i].wrapping_sub(cum[i - 1])
    }
}

/// Total cost of entries `from..to`, exactly, entry by entry (the slow path of wide logs; the
/// total of at most 2^64 costs below 2^64 fits u128).
fn exact_cost(cum: &[u64], from: usize, to: usize) -> u128 {
    (from..to).map(|i| u128::from(entry_cost(cum, i))).sum()
}

/// A layout's entries, for reading: entry `i` (`head <= i < end()`) is at `base + times[i]`,
/// with u16 offsets (`T`) in the inline and mid layouts, u32 ones in the large layout.
#[derive(Clone, Copy)]
struct View<'a, T> {
    base: u64,
    head: usize,
    times: &'a [T],
    /// As `Large::cum`: empty while every entry has cost 1.
    cum: &'a [u64],
    /// As `Repr::Large::wide`: sums of `cum` differences may have wrapped.
    wide: bool,
}

#[derive(Clone, Copy)]
enum AnyView<'a> {
    Short(View<'a, u16>),
    Large(View<'a, u32>),
}

/// Evaluates `$body` with `$v` bound to the view inside `$any`, whatever its offset type: the
/// algorithms are generic, so matching once on the layout leaves none in their loops.
macro_rules! with_view {
    ($any:expr, $v:ident => $body:expr) => {
        match $any {
            AnyView::Short($v) => $body,
            AnyView::Large($v) => $body,
        }
    };
}

mod layout;
#[cfg(test)]
mod tests;

use layout::Repr;
pub use layout::{MID_CAPACITY, SMALL_CAPACITY};

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        with_view!(self.view(), v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Timestamp of the newest entry.
    pub fn newest_ms(&self) -> Option<u64> {
        with_view!(self.view(), v => v.newest())
    }

    /// When the key can expire: the longest window after the newest entry.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.newest_ms().map(|t| t + self.horizon_ms())
    }

    /// Live entries as `(timestamp_ms, cost)`, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let any = self.view();
        let (head, end) = with_view!(any, v => (v.head, v.end()));
        (head..end).map(move |i| with_view!(any, v => (v.ts(i), v.cost_between(i, i + 1))))
    }

    /// Rebuilds a log from its entries (decoding); see `Builder::push` for what they must be.
    pub fn from_entries(
        horizon_ms: u64,
        entries: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Self, &'static str> {
        let mut builder = Builder::new(horizon_ms)?;
        for (ts, cost) in entries {
            builder.push(ts, cost)?;
        }
        Ok(builder.finish())
    }

    /// RATELIMIT.PEEK: the reply CHECK would give now, recording nothing.
    pub fn peek(&self, now_ms: u64, policies: &[Policy], cost: u64) -> Decision {
        with_view!(self.view(), v => v.peek(now_ms, policies, cost))
    }

    /// RATELIMIT.CHECK: decides, and if allowed records `cost` at `now_ms`. Returns the
    /// decision and whether anything was recorded (so the caller knows to replicate).
    pub fn check(&mut self, now_ms: u64, policies: &[Policy], cost: u64) -> (Decision, bool) {
        let decision = self.peek(now_ms, policies, cost);
        let recorded = decision.allowed && cost > 0;
        if recorded {
            let horizon = policies.iter().map(|p| p.window_ms).max().unwrap_or(1);
            self.record(now_ms, cost, horizon);
        }
        (decision, recorded)
    }

    /// Each policy's state at `now_ms` once `recorded` (0 for none) is recorded as CHECK
    /// records it: on the log after a CHECK, `recorded` is 0; a PEEK passes the cost its
    /// decision would record (`cost` when allowed, else 0), so it reports what CHECK would.
    pub fn states<'a>(
        &'a self,
        now_ms: u64,
        policies: &'a [Policy],
        recorded: u64,
    ) -> impl Iterator<Item = PolicyState> + 'a {
        let any = self.view();
        policies
            .iter()
            .map(move |p| with_view!(any, v => v.state(now_ms, p, recorded)))
    }

    /// Appends `cost` at `max(now_ms, newest)` (the log stays ordered if the clock steps
    /// back), after dropping entries older than the horizon. This is the replicated effect of
    /// an allowed CHECK: deterministic given the log, `now_ms`, `cost` and `horizon_ms`.
    pub fn record(&mut self, now_ms: u64, cost: u64, horizon_ms: u64) {
        debug_assert!(cost > 0 && (1..=MAX_WINDOW_MS).contains(&horizon_ms));
        let horizon = self.horizon_mut();
        *horizon = (*horizon).max(horizon_ms.min(MAX_WINDOW_MS) as u32);
        let horizon = u64::from(*horizon);
        // One look serves both: trimming keeps the newest entry unless it drops them all, and
        // then the newest was older than `now_ms` anyway.
        let (start, newest) =
            with_view!(self.view(), v => (v.window_start(now_ms, horizon), v.newest()));
        self.trim(start);
        self.push(newest.map_or(now_ms, |t| t.max(now_ms)), cost);
    }
}

impl<T: Copy + Into<u64>> View<'_, T> {
    /// See `Log::peek`.
    pub fn peek(&self, now_ms: u64, policies: &[Policy], cost: u64) -> Decision {
        let mut best: Option<(Decision, u64)> = None; // (decision, tie-break key)
        let mut never: Option<Decision> = None;
        let mut denied = false;
        let record_at = self.newest().map_or(now_ms, |t| t.max(now_ms));

        for p in policies {
            let start = self.window_start(now_ms, p.window_ms);
            let used = self.cost_between(start, self.end());
            let newest_in_window = (start < self.end()).then(|| self.ts(self.end() - 1));
            let reset_now = newest_in_window.map_or(0, |t| t + p.window_ms - now_ms);

            if cost > p.limit {
                never.get_or_insert(Decision {
                    allowed: false,
                    limit: p.limit,
                    remaining: p.limit.saturating_sub(used),
                    retry_after_ms: -1,
                    reset_after_ms: reset_now,
                });
                continue;
            }
            match used.checked_add(cost).filter(|&total| total <= p.limit) {
                Some(total) if !denied => {
                    let remaining = p.limit - total;
                    let reset = if cost > 0 {
                        record_at + p.window_ms - now_ms
                    } else {
                        reset_now
                    };
                    let d = Decision {
                        allowed: true,
                        limit: p.limit,
                        remaining,
                        retry_after_ms: 0,
                        reset_after_ms: reset,
                    };
                    // Binding: least remaining; on a tie, the one that resets last.
                    let better = best.as_ref().is_none_or(|(b, _)| {
                        (remaining, std::cmp::Reverse(reset))
                            < (b.remaining, std::cmp::Reverse(b.reset_after_ms))
                    });
                    if better {
                        best = Some((d, 0));
                    }
                }
                Some(_) => {}
                None => {
                    let retry = self.retry_after(start, used, cost, p, now_ms);
                    let d = Decision {
                        allowed: false,
                        limit: p.limit,
                        remaining: p.limit.saturating_sub(used),
                        retry_after_ms: retry as i64,
                        reset_after_ms: reset_now,
                    };
                    // Binding: the violated policy that frees up last.
                    let better = !denied || best.as_ref().is_none_or(|(_, r)| retry > *r);
                    if better {
                        best = Some((d, retry));
                    }
                    denied = true;
                }
            }
        }
        if let Some(d) = never {
            return d;
        }
        best.map(|(d, _)| d).unwrap_or(Decision {
            allowed: true,
            limit: 0,
            remaining: 0,
            retry_after_ms: 0,
            reset_after_ms: 0,
        })
    }

    /// See `Log::states`.
    fn state(&self, now_ms: u64, p: &Policy, recorded: u64) -> PolicyState {
        let start = self.window_start(now_ms, p.window_ms);
        let used = self.cost_between(start, self.end());
        let (used, newest) = if recorded > 0 {
            let at = self.newest().map_or(now_ms, |t| t.max(now_ms));
            (used.saturating_add(recorded), Some(at))
        } else {
            (used, (start < self.end()).then(|| self.ts(self.end() - 1)))
        };
        PolicyState {
            limit: p.limit,
            window_ms: p.window_ms,
            remaining: p.limit.saturating_sub(used),
            reset_after_ms: newest.map_or(0, |t| t + p.window_ms - now_ms),
        }
    }

    /// One past the index of the newest entry.
    fn end(&self) -> usize {
        self.times.len()
    }

    fn len(&self) -> usize {
        self.end() - self.head
    }

    fn newest(&self) -> Option<u64> {
        (self.len() > 0).then(|| self.ts(self.end() - 1))
    }

    fn ts(&self, i: usize) -> u64 {
        self.base + self.times[i].into()
    }

    /// Total cost of entries `from..to` (absolute indices), saturating at `u64::MAX`.
    fn cost_between(&self, from: usize, to: usize) -> u64 {
        if self.cum.is_empty() {
            return (to - from) as u64;
        }
        if self.wide {
            return u64::try_from(exact_cost(self.cum, from, to)).unwrap_or(u64::MAX);
        }
        let upto = |i: usize| if i == 0 { 0 } else { self.cum[i - 1] };
        upto(to).wrapping_sub(upto(from))
    }

    /// First live index whose entry is still inside a window of `window_ms` ending at `now_ms`.
    fn window_start(&self, now_ms: u64, window_ms: u64) -> usize {
        // Entry t is in the window iff t + window > now, i.e. offset > now - window - base.
        let Some(cutoff) = now_ms
            .checked_sub(window_ms)
            .and_then(|c| c.checked_sub(self.base))
        else {
            return self.head;
        };
        self.head + self.times[self.head..].partition_point(|&o| o.into() <= cutoff)
    }

    /// Exact ms until enough of the window's oldest entries leave it for `cost` to fit.
    fn retry_after(&self, start: usize, used: u64, cost: u64, p: &Policy, now_ms: u64) -> u64 {
        // Entries start..=k must leave, where k is the first index at which the cost dropped
        // since `start` reaches `need` = used + cost - limit: > 0 and <= used, since
        // cost <= limit < used + cost (written so that nothing overflows).
        let k = if self.cum.is_empty() {
            start + (used - (p.limit - cost)) as usize - 1
        } else if self.wide {
            // `used` may be saturated: the exact need, then the exact running sum.
            let need = exact_cost(self.cum, start, self.end()) - u128::from(p.limit - cost);
            let mut dropped = 0u128;
            (start..self.end())
                .find(|&i| {
                    dropped += u128::from(entry_cost(self.cum, i));
                    dropped >= need
                })
                .expect("the whole window frees `used`")
        } else {
            let need = used - (p.limit - cost);
            let before = if start == 0 { 0 } else { self.cum[start - 1] };
            start + self.cum[start..].partition_point(|&c| c.wrapping_sub(before) < need)
        };
        (self.ts(k) + p.window_ms).saturating_sub(now_ms)
    }
}

/// Rebuilds a log entry by entry (decoding), checking each one, so that a decoder holds no
/// copy of the entries and allocates only for what it has read.
pub struct Builder {
    log: Log,
    oldest: Option<u64>,
}

impl Builder {
    /// `horizon_ms` must be a valid window.
    pub fn new(horizon_ms: u64) -> Result<Self, &'static str> {
        if horizon_ms == 0 || horizon_ms > MAX_WINDOW_MS {
            return Err("horizon out of range");
        }
        let mut log = Log::new();
        *log.horizon_mut() = horizon_ms as u32;
        Ok(Builder { log, oldest: None })
    }

    /// Entries must come sorted, cost `1..=MAX_AMOUNT` (what CHECK accepts) and span at most
    /// `MAX_WINDOW_MS`.
    pub fn push(&mut self, ts: u64, cost: u64) -> Result<(), &'static str> {
        if cost == 0 {
            return Err("entry with zero cost");
        }
        if cost > MAX_AMOUNT {
            return Err("entry cost out of range");
        }
        // Commands never record past i64::MAX ms; larger values could only overflow.
        if ts > i64::MAX as u64 {
            return Err("timestamp out of range");
        }
        let oldest = *self.oldest.get_or_insert(ts);
        match self.log.newest_ms() {
            Some(newest) if ts < newest => return Err("entries out of order"),
            _ if ts - oldest > MAX_WINDOW_MS => return Err("entries span too long"),
            _ => {}
        }
        self.log.push(ts, cost);
        Ok(())
    }

    pub fn finish(self) -> Log {
        self.log
    }
}
