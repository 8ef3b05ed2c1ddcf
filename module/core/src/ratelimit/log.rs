//! The sliding-window log: an exact record of what was admitted and when.
//!
//! Pure Rust with no Redis import: every operation takes `now_ms` as an argument, so the whole
//! algorithm is tested as tables of (time, request) -> reply.
//!
//! An entry recorded at `t` counts in a window of `w` ms while `now < t + w`: an entry exactly
//! `w` ms old has left the window. A request of cost `c` is allowed iff, for every policy,
//! the cost recorded in its window plus `c` is at most its limit.
//!
//! Layout: timestamps are millisecond offsets from a `base`. Redis allocates the value itself
//! (`size_of::<Log>()`, 32 bytes: jemalloc's 32-byte class), and the log is in one of three
//! layouts:
//! - inline: at most `SMALL_CAPACITY` (10) entries, all of cost 1, below 2^48 ms and spanning
//!   at most 65.535 s, as `u16` offsets from a 48-bit base inside those 32 bytes;
//! - mid: up to `MID_CAPACITY` (31) entries, all of cost 1 and spanning at most 65.535 s, at
//!   any time (a u64 base): the same `u16` offsets in one 64-byte box (jemalloc's 64-byte
//!   class), so 11 to 31 entries take 96 bytes in all;
//! - large: `u32` offsets (4 bytes per entry), costs implicit while every entry has cost 1;
//!   the first entry of another cost adds a parallel array of wrapping cumulative costs (8 more
//!   bytes per entry) so window sums stay O(log n). Expired entries leave the large layout by
//!   advancing `head`, and its storage is compacted once more than half of it is dead, so
//!   trimming is amortized O(1).
//!
//! Sums are exact. A difference of wrapping cumulative costs is exact while the live entries
//! cost at most `u64::MAX` in all; costs are at most `MAX_AMOUNT` (2^63-1), but windows and
//! limits vary between calls, so the live total can pass that (two entries of 2^63-1 made
//! under a 1 ms window, then a request under a longer one). A large log whose live total does
//! is marked `wide` (a flag in its 32 inline bytes, so no memory is added), and while it is,
//! sums are taken entry by entry in u128 and saturate at `u64::MAX`, which no limit reaches:
//! such a window denies. Unit logs and logs that stay below 2^64 never take that path.
//!
//! A log grows into the next layout when an entry does not fit, and a boxed log moves back to
//! a smaller layout once its live entries fit in half of it (half, so that a log at a boundary
//! does not move back and forth).

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

/// Entries the inline layout holds.
pub const SMALL_CAPACITY: usize = 10;

/// Entries the mid layout holds: its length byte and u16 offsets fill 64 bytes.
pub const MID_CAPACITY: usize = 31;

/// Inline timestamps stay below 2^48 ms (the year 10889), so the inline base fits in 48 bits.
const INLINE_LIMIT_MS: u64 = 1 << 48;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log(Repr);

// Redis allocates `Log` itself: 32 bytes is jemalloc's 32-byte class (the next one is 48).
const _: () = assert!(std::mem::size_of::<Log>() == 32);
// The mid layout's box is exactly jemalloc's 64-byte class.
const _: () = assert!(std::mem::size_of::<Short<MID_CAPACITY>>() == 64);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// Base `base_lo | base_hi << 32`: 48 bits, as a u64 base would take the variant to 33
    /// bytes. `horizon`, in every layout, is the longest window ever recorded with: entries
    /// older than this can no longer matter.
    Inline {
        base_lo: u32,
        base_hi: u16,
        horizon: u32,
        short: Short<SMALL_CAPACITY>,
    },
    /// Base and horizon stay inline; only the length and offsets take the box.
    Mid {
        base: u64,
        horizon: u32,
        short: Box<Short<MID_CAPACITY>>,
    },
    /// `wide`: the live entries cost more than `u64::MAX` in all (see the module comment).
    /// It takes padding of this variant: `Log` stays 32 bytes.
    Large {
        base: u64,
        horizon: u32,
        wide: bool,
        large: Box<Large>,
    },
}

/// Generates `Len`, the length of a u16 layout (`0..=MID_CAPACITY`), and `Len::of`. An enum
/// rather than a u8 because its unused values are a niche: `Repr` keeps its tag there, so the
/// boxed layouts fit beside it in the inline 32 bytes.
macro_rules! lengths {
    ($($name:ident = $n:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        enum Len {
            $($name = $n),*
        }

        impl Len {
            /// The `Len` of `n` (compiles to a range check: `Len::of(n) as usize == n`).
            fn of(n: usize) -> Len {
                match n {
                    $($n => Len::$name,)*
                    _ => unreachable!("a u16 layout holds at most MID_CAPACITY entries"),
                }
            }
        }
    };
}

lengths! {
    L0 = 0, L1 = 1, L2 = 2, L3 = 3, L4 = 4, L5 = 5, L6 = 6, L7 = 7,
    L8 = 8, L9 = 9, L10 = 10, L11 = 11, L12 = 12, L13 = 13, L14 = 14, L15 = 15,
    L16 = 16, L17 = 17, L18 = 18, L19 = 19, L20 = 20, L21 = 21, L22 = 22, L23 = 23,
    L24 = 24, L25 = 25, L26 = 26, L27 = 27, L28 = 28, L29 = 29, L30 = 30, L31 = 31,
}

const _: () = assert!(Len::L31 as usize == MID_CAPACITY);

/// Unit-cost entries at `base + offsets[i]`, `i < len`; the owner keeps `base` (at most the
/// oldest entry). One type for the inline (`N = SMALL_CAPACITY`) and mid (`N = MID_CAPACITY`)
/// layouts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Short<const N: usize> {
    len: Len,
    offsets: [u16; N],
}

impl<const N: usize> Short<N> {
    const EMPTY: Self = Short {
        len: Len::L0,
        offsets: [0; N],
    };

    fn offsets(&self) -> &[u16] {
        &self.offsets[..self.len as usize]
    }

    /// A copy of a smaller layout's offsets (relative to the same base).
    fn from_offsets(offsets: &[u16]) -> Self {
        let mut short = Self::EMPTY;
        short.offsets[..offsets.len()].copy_from_slice(offsets);
        short.len = Len::of(offsets.len());
        short
    }

    /// The live entries of `v` with their base, if they are at most `N`, all of cost 1 and
    /// within u16 ms of the oldest one (the base).
    fn of<T: Copy + Into<u64>>(v: View<T>) -> Option<(u64, Self)> {
        let live = v.head..v.end();
        if live.len() > N {
            return None;
        }
        let base = if live.is_empty() { 0 } else { v.ts(v.head) };
        let mut short = Self::EMPTY;
        for (o, i) in short.offsets.iter_mut().zip(live.clone()) {
            if v.cost_between(i, i + 1) != 1 {
                return None;
            }
            *o = u16::try_from(v.ts(i) - base).ok()?;
        }
        short.len = Len::of(live.len());
        Some((base, short))
    }

    /// Appends a unit entry at `ts` (not older than the newest) if there is room and it is
    /// within u16 ms of the oldest entry.
    fn push(&mut self, base: &mut u64, ts: u64) -> bool {
        let n = self.len as usize;
        if n == 0 {
            *base = ts;
        } else if ts - *base > u64::from(u16::MAX) {
            // Only now move `base` to the oldest entry (most entries fit without), so that the
            // u16 offsets reach as far as they can.
            let shift = self.offsets[0];
            self.offsets[..n].iter_mut().for_each(|o| *o -= shift);
            *base += u64::from(shift);
        }
        match u16::try_from(ts - *base) {
            Ok(offset) if n < N => {
                self.offsets[n] = offset;
                self.len = Len::of(n + 1);
                true
            }
            _ => false,
        }
    }

    /// Drops the `dead` oldest entries.
    fn trim(&mut self, dead: usize) {
        let n = self.len as usize;
        self.offsets.copy_within(dead..n, 0);
        self.len = Len::of(n - dead);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Large {
    /// Index of the first live entry in `times` (and `cum`).
    head: usize,
    times: Vec<u32>,
    /// Empty while every entry has cost 1; else `cum[i]` is the wrapping sum of the costs of
    /// entries `0..=i` (dead ones included: only differences are ever used).
    cum: Vec<u64>,
}

impl Large {
    /// The unit-cost entries of a u16 layout, relative to the same base.
    fn of(offsets: &[u16]) -> Self {
        // Room for one more entry, then doubling: 16 slots from the inline layout (32 from the
        // mid one), 32, ... 1024, so a log of 1,000 entries takes about 4 bytes each.
        let mut times = Vec::with_capacity((offsets.len() + 1).next_power_of_two().max(16));
        times.extend(offsets.iter().map(|&o| u32::from(o)));
        Large {
            head: 0,
            times,
            cum: Vec::new(),
        }
    }

    /// Appends `cost` at `ts` (not older than the newest entry); sets `wide` if the live
    /// total passes `u64::MAX`.
    fn push(&mut self, base: &mut u64, ts: u64, cost: u64, wide: &mut bool) {
        if ts - *base > MAX_WINDOW_MS {
            self.rebase(base, ts);
        }
        let weighted = cost != 1 || !self.cum.is_empty();
        if weighted {
            let before = if self.cum.is_empty() {
                self.times.len() as u64
            } else {
                self.cum.last().copied().unwrap_or(0)
            };
            if self.cum.is_empty() {
                // First entry of another cost: from now on costs are explicit.
                self.cum = (1..=self.times.len() as u64).collect();
            }
            if !*wide {
                // Exact while not wide: the live total so far.
                let dead = if self.head == 0 {
                    0
                } else {
                    self.cum[self.head - 1]
                };
                *wide = before.wrapping_sub(dead).checked_add(cost).is_none();
            }
            self.cum.push(before.wrapping_add(cost));
        }
        self.times.push((ts - *base) as u32);
    }

    /// Drops the entries before index `start`; clears `wide` once the live total fits u64.
    fn trim(&mut self, start: usize, wide: &mut bool) {
        self.head = start;
        if *wide {
            *wide = exact_cost(&self.cum, start, self.times.len()) > u128::from(u64::MAX);
        }
        let mostly_dead = self.head > 16 && self.head * 2 > self.times.len();
        if mostly_dead {
            self.compact();
        }
    }

    /// Physically removes dead entries and releases memory mostly unused.
    fn compact(&mut self) {
        let head = self.head;
        self.times.drain(..head);
        if !self.cum.is_empty() && head > 0 {
            // Keep `cum[i]` = total cost of entries `0..=i` for the new index 0.
            let dropped = self.cum[head - 1];
            self.cum.drain(..head);
            for c in &mut self.cum {
                *c = c.wrapping_sub(dropped);
            }
        }
        self.head = 0;
        if self.times.capacity() > 4 * self.times.len().max(4) {
            self.times.shrink_to(2 * self.times.len());
            self.cum.shrink_to(2 * self.cum.len());
        }
    }

    /// Moves `base` to the oldest live entry (to `ts` if there is none) so offsets up to `ts`
    /// fit in u32 again.
    fn rebase(&mut self, base: &mut u64, ts: u64) {
        self.compact();
        match self.times.first().copied() {
            Some(shift) => {
                for t in &mut self.times {
                    *t -= shift;
                }
                *base += u64::from(shift);
            }
            None => *base = ts,
        }
    }
}

/// Cost of entry `i` given wrapping cumulative costs: exact, as one cost fits u64.
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

fn join_base(lo: u32, hi: u16) -> u64 {
    u64::from(lo) | u64::from(hi) << 32
}

fn split_base(base: u64) -> (u32, u16) {
    debug_assert!(base < INLINE_LIMIT_MS);
    (base as u32, (base >> 32) as u16)
}

impl Default for Log {
    fn default() -> Self {
        Log(Repr::Inline {
            base_lo: 0,
            base_hi: 0,
            horizon: 0,
            short: Short::EMPTY,
        })
    }
}

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

    pub fn horizon_ms(&self) -> u64 {
        match &self.0 {
            Repr::Inline { horizon, .. }
            | Repr::Mid { horizon, .. }
            | Repr::Large { horizon, .. } => u64::from(*horizon),
        }
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

    /// Heap bytes owned by the log beyond its inline part, for MEMORY USAGE.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Mid { .. } => std::mem::size_of::<Short<MID_CAPACITY>>(),
            Repr::Large { large, .. } => {
                std::mem::size_of::<Large>()
                    + large.times.capacity() * std::mem::size_of::<u32>()
                    + large.cum.capacity() * std::mem::size_of::<u64>()
            }
        }
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

    fn horizon_mut(&mut self) -> &mut u32 {
        match &mut self.0 {
            Repr::Inline { horizon, .. }
            | Repr::Mid { horizon, .. }
            | Repr::Large { horizon, .. } => horizon,
        }
    }

    /// Appends `cost` at `ts` (not older than the newest entry), moving to a larger layout if
    /// the entry does not fit this one.
    fn push(&mut self, ts: u64, cost: u64) {
        let pushed = match &mut self.0 {
            Repr::Inline {
                base_lo,
                base_hi,
                short,
                ..
            } if cost == 1 && ts < INLINE_LIMIT_MS => {
                let mut base = join_base(*base_lo, *base_hi);
                let pushed = short.push(&mut base, ts);
                (*base_lo, *base_hi) = split_base(base);
                pushed
            }
            Repr::Mid { base, short, .. } if cost == 1 => short.push(base, ts),
            Repr::Large {
                base, large, wide, ..
            } => {
                large.push(base, ts, cost, wide);
                true
            }
            _ => false,
        };
        if !pushed {
            self.grow(ts, cost);
            // The new layout takes the entry: the mid one is chosen only if it does.
            self.push(ts, cost);
        }
    }

    /// Moves a u16 layout that refused `(ts, cost)` to the mid layout if that takes it (a unit
    /// entry within u16 ms of the oldest, and room), else to the large layout.
    fn grow(&mut self, ts: u64, cost: u64) {
        let horizon = self.horizon_ms() as u32;
        let AnyView::Short(v) = self.view() else {
            unreachable!("the large layout takes every entry")
        };
        let offsets = v.times;
        let into_mid = matches!(self.0, Repr::Inline { .. })
            && cost == 1
            && offsets.len() < MID_CAPACITY
            && offsets
                .first()
                .is_none_or(|&o| ts - (v.base + u64::from(o)) <= u64::from(u16::MAX));
        self.0 = if into_mid {
            Repr::Mid {
                base: v.base,
                horizon,
                short: Box::new(Short::from_offsets(offsets)),
            }
        } else {
            Repr::Large {
                base: v.base,
                horizon,
                wide: false,
                large: Box::new(Large::of(offsets)),
            }
        };
    }

    /// Drops the entries before index `start`: those no window within the horizon can see.
    /// Only a drop can make a log fit a smaller layout (pushes only add entries and widen the
    /// span), so nothing else is done when nothing is dropped.
    fn trim(&mut self, start: usize) {
        match &mut self.0 {
            Repr::Inline { short, .. } => {
                if start > 0 {
                    short.trim(start);
                }
                return;
            }
            Repr::Mid { short, .. } if start > 0 => short.trim(start),
            Repr::Large { large, wide, .. } if start > large.head => large.trim(start, wide),
            _ => return,
        }
        self.shrink();
    }

    /// Moves a boxed log whose live entries fit in half of a smaller layout into it.
    fn shrink(&mut self) {
        let horizon = self.horizon_ms() as u32;
        let any = self.view();
        let (n, newest) = with_view!(any, v => (v.len(), v.newest()));
        let smaller = if n <= SMALL_CAPACITY / 2 && newest.is_none_or(|t| t < INLINE_LIMIT_MS) {
            with_view!(any, v => Short::of(v)).map(|(base, short)| {
                let (base_lo, base_hi) = split_base(base);
                Repr::Inline {
                    base_lo,
                    base_hi,
                    horizon,
                    short,
                }
            })
        } else if n <= MID_CAPACITY / 2 && matches!(self.0, Repr::Large { .. }) {
            with_view!(any, v => Short::of(v)).map(|(base, short)| Repr::Mid {
                base,
                horizon,
                short: Box::new(short),
            })
        } else {
            None
        };
        if let Some(repr) = smaller {
            self.0 = repr;
        }
    }

    fn view(&self) -> AnyView<'_> {
        match &self.0 {
            Repr::Inline {
                base_lo,
                base_hi,
                short,
                ..
            } => AnyView::Short(View {
                base: join_base(*base_lo, *base_hi),
                head: 0,
                times: short.offsets(),
                cum: &[],
                wide: false,
            }),
            Repr::Mid { base, short, .. } => AnyView::Short(View {
                base: *base,
                head: 0,
                times: short.offsets(),
                cum: &[],
                wide: false,
            }),
            Repr::Large {
                base, large, wide, ..
            } => AnyView::Large(View {
                base: *base,
                head: large.head,
                times: &large.times,
                cum: &large.cum,
                wide: *wide,
            }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const fn pol(limit: u64, window_ms: u64) -> Policy {
        Policy { limit, window_ms }
    }

    fn decision(allowed: bool, limit: u64, remaining: u64, retry: i64, reset: u64) -> Decision {
        Decision {
            allowed,
            limit,
            remaining,
            retry_after_ms: retry,
            reset_after_ms: reset,
        }
    }

    /// Runs (now, cost, expected) steps of CHECK against one policy set.
    fn run(policies: &[Policy], steps: &[(u64, u64, Decision)]) -> Log {
        let mut log = Log::new();
        for (i, &(now, cost, want)) in steps.iter().enumerate() {
            let (got, _) = log.check(now, policies, cost);
            assert_eq!(got, want, "step {i} at t={now} cost={cost}");
        }
        log
    }

    #[test]
    fn check_denies_the_sixth_request_in_the_window() {
        let p = [pol(5, 60_000)];
        run(
            &p,
            &[
                (1000, 1, decision(true, 5, 4, 0, 60_000)),
                (2000, 1, decision(true, 5, 3, 0, 60_000)),
                (3000, 1, decision(true, 5, 2, 0, 60_000)),
                (4000, 1, decision(true, 5, 1, 0, 60_000)),
                (5000, 1, decision(true, 5, 0, 0, 60_000)),
                // Oldest entry (t=1000) leaves at 61000: 55000 ms from t=6000.
                (6000, 1, decision(false, 5, 0, 55_000, 59_000)),
            ],
        );
    }

    #[test]
    fn an_entry_exactly_window_ms_old_no_longer_counts() {
        let p = [pol(1, 1000)];
        run(
            &p,
            &[
                (0, 1, decision(true, 1, 0, 0, 1000)),
                (999, 1, decision(false, 1, 0, 1, 1)),
                (1000, 1, decision(true, 1, 0, 0, 1000)),
            ],
        );
    }

    #[test]
    fn cost_equal_to_limit_is_allowed_once_and_above_limit_never() {
        let p = [pol(10, 1000)];
        run(
            &p,
            &[
                (0, 10, decision(true, 10, 0, 0, 1000)),
                (1, 1, decision(false, 10, 0, 999, 999)),
                (2, 11, decision(false, 10, 0, -1, 998)),
                (1000, 11, decision(false, 10, 10, -1, 0)),
            ],
        );
    }

    #[test]
    fn retry_after_is_exact_with_weighted_entries() {
        let p = [pol(10, 1000)];
        let mut log = run(
            &p,
            &[
                (0, 3, decision(true, 10, 7, 0, 1000)),
                (100, 4, decision(true, 10, 3, 0, 1000)),
                (200, 2, decision(true, 10, 1, 0, 1000)),
            ],
        );
        // Cost 5 needs 4 units freed: entries at 0 (3) and 100 (4) must go; 100 leaves at 1100.
        assert_eq!(log.peek(300, &p, 5), decision(false, 10, 1, 800, 900));
        // Cost 3 needs 2 units: the entry at 0 is enough; it leaves at 1000.
        assert_eq!(log.peek(300, &p, 3), decision(false, 10, 1, 700, 900));
        assert_eq!(log.check(1000, &p, 3).0, decision(true, 10, 1, 0, 1000));
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(100, 4), (200, 2), (1000, 3)]
        );
    }

    #[test]
    fn every_policy_must_allow_and_the_binding_one_is_reported() {
        // 3 per second and 5 per 10 seconds.
        let p = [pol(3, 1000), pol(5, 10_000)];
        run(
            &p,
            &[
                (0, 1, decision(true, 3, 2, 0, 1000)),
                (10, 1, decision(true, 3, 1, 0, 1000)),
                (20, 1, decision(true, 3, 0, 0, 1000)),
                (30, 1, decision(false, 3, 0, 970, 990)),
                // At 1500 the 1 s window is clear; the 10 s one holds 3 and binds.
                (1500, 1, decision(true, 5, 1, 0, 10_000)),
                (1510, 1, decision(true, 5, 0, 0, 10_000)),
                // 1 s still fits (2 of 3); 10 s is full until the t=0 entry leaves at 10000.
                (1520, 1, decision(false, 5, 0, 8480, 9990)),
            ],
        );
    }

    #[test]
    fn denial_reports_the_violated_policy_that_frees_up_last() {
        let p = [pol(1, 1000), pol(2, 5000)];
        let mut log = Log::new();
        log.check(0, &p, 1);
        log.check(1000, &p, 1);
        // At 1500: 1 s policy violated until 2000; 5 s policy violated until 5000.
        assert_eq!(log.peek(1500, &p, 1), decision(false, 2, 0, 3500, 4500));
    }

    #[test]
    fn a_denied_request_records_nothing() {
        let p = [pol(1, 1000)];
        let mut log = Log::new();
        assert!(log.check(0, &p, 1).1);
        assert!(!log.check(1, &p, 1).1);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn cost_zero_is_allowed_and_records_nothing() {
        let p = [pol(1, 1000)];
        let mut log = Log::new();
        log.check(0, &p, 1);
        assert_eq!(log.check(5, &p, 0), (decision(true, 1, 0, 0, 995), false));
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn peek_on_an_empty_log_reports_a_full_budget() {
        let log = Log::new();
        assert_eq!(
            log.peek(0, &[pol(5, 60_000)], 1),
            decision(true, 5, 4, 0, 60_000)
        );
        assert_eq!(
            log.peek(0, &[pol(5, 60_000)], 0),
            decision(true, 5, 5, 0, 0)
        );
    }

    #[test]
    fn a_clock_that_goes_backwards_keeps_the_log_ordered_and_counts_future_entries() {
        let p = [pol(2, 1000)];
        let mut log = Log::new();
        log.check(5000, &p, 1);
        // The clock steps back 3 s: the entry from "the future" still counts, and the new
        // entry is recorded at the newest timestamp so the log stays sorted.
        assert_eq!(log.check(2000, &p, 1).0, decision(true, 2, 0, 0, 4000));
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(5000, 1), (5000, 1)]
        );
        assert_eq!(log.peek(2000, &p, 1), decision(false, 2, 0, 4000, 4000));
    }

    #[test]
    fn old_entries_are_trimmed_to_the_longest_window_and_the_expiry_follows_the_newest() {
        let mut log = Log::new();
        for t in 0..100 {
            log.check(t * 10, &[pol(1000, 100)], 1);
        }
        // Entries older than 100 ms relative to the last record at 990 are gone.
        assert_eq!(log.len(), 10);
        assert_eq!(log.expires_at_ms(), Some(1090));
        // A longer window widens the horizon for good.
        log.check(1000, &[pol(1000, 5000)], 1);
        assert_eq!(log.horizon_ms(), 5000);
        assert_eq!(log.expires_at_ms(), Some(6000));
    }

    #[test]
    fn offsets_rebase_when_the_log_outlives_u32_milliseconds() {
        let p = [pol(10, MAX_WINDOW_MS)];
        let mut log = Log::new();
        log.check(1, &p, 1);
        let late = MAX_WINDOW_MS - 10;
        log.check(late, &p, 1);
        log.check(late + 100, &p, 1); // the first entry leaves; base must move
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(late, 1), (late + 100, 1)]
        );
        assert_eq!(log.peek(late + 100, &p, 1).remaining, 7);
    }

    #[test]
    fn from_entries_round_trips_and_refuses_bad_input() {
        let mut log = Log::new();
        for (t, c) in [(10, 1), (20, 5), (20, 1), (30, 2)] {
            log.check(t, &[pol(100, 1000)], c);
        }
        let copy = Log::from_entries(log.horizon_ms(), log.entries()).unwrap();
        assert_eq!(
            copy.entries().collect::<Vec<_>>(),
            log.entries().collect::<Vec<_>>()
        );
        assert_eq!(
            copy.peek(40, &[pol(100, 1000)], 1),
            log.peek(40, &[pol(100, 1000)], 1)
        );
        assert!(Log::from_entries(0, []).is_err());
        assert!(Log::from_entries(10, [(5, 1), (4, 1)]).is_err());
        assert!(Log::from_entries(10, [(5, 0)]).is_err());
        assert!(Log::from_entries(10, [(0, 1), (MAX_WINDOW_MS + 1, 1)]).is_err());
    }

    /// A small deterministic generator, so the randomized test needs no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Which layout a log is in.
    fn layout(log: &Log) -> &'static str {
        match log.0 {
            Repr::Inline { .. } => "inline",
            Repr::Mid { .. } => "mid",
            Repr::Large { .. } => "large",
        }
    }

    #[test]
    fn every_length_of_a_u16_layout_maps_to_itself() {
        for n in 0..=MID_CAPACITY {
            assert_eq!(Len::of(n) as usize, n);
        }
    }

    #[test]
    fn a_small_log_is_one_32_byte_value_and_twelve_entries_add_one_64_byte_box() {
        assert_eq!(std::mem::size_of::<Log>(), 32);
        let p = [pol(100, 60_000)];
        let mut log = Log::new();
        for t in 0..12 {
            log.check(1_700_000_000_000 + t * 1000, &p, 1);
            let heap = if t < 10 { 0 } else { 64 };
            assert_eq!(log.heap_bytes(), heap, "{} entries", t + 1);
        }
        assert_eq!(log.len(), 12);
        assert!(log.heap_bytes() <= 64);
    }

    #[test]
    fn unit_logs_move_through_the_layouts_at_their_capacities_and_back() {
        // The layout a growing log of n unit entries within 65.5 s is in.
        let growing = |n: usize| {
            if n <= SMALL_CAPACITY {
                "inline"
            } else if n <= MID_CAPACITY {
                "mid"
            } else {
                "large"
            }
        };
        let p = [pol(100, 60_000)];
        let mut log = Log::new();
        let mut want: Vec<(u64, u64)> = Vec::new();
        let mut check = |log: &mut Log, now: u64, expected: &str| {
            assert!(log.check(now, &p, 1).0.allowed);
            want.retain(|&(t, _)| t + 60_000 > now);
            want.push((now, 1));
            assert_eq!(log.entries().collect::<Vec<_>>(), want, "at {now}");
            assert_eq!(layout(log), expected, "{} entries at {now}", want.len());
        };
        // 1..=10 inline, 11..=31 in the mid box, the 32nd moves to the large layout.
        for i in 0..32 {
            check(&mut log, i * 1000, growing(i as usize + 1));
        }
        // At 76.5 s the 15 entries at 17..=31 s are live: they fit in half of the mid layout.
        check(&mut log, 76_500, "mid");
        assert_eq!(log.heap_bytes(), 64);
        // 7 live entries (26..=31 s and 76.5 s) stay in the mid box; 5 (29..=31, 76.5 and
        // 85.5 s) go back inline.
        check(&mut log, 85_500, "mid");
        check(&mut log, 88_500, "inline");
        assert_eq!(log.len(), 6);
        assert_eq!(log.heap_bytes(), 0);
        // 3 entries stay live (76.5..=88.5 s) while 37 more arrive.
        for i in 0..37 {
            check(&mut log, 100_000 + i * 100, growing(4 + i as usize));
        }
        // A large log whose entries all expired goes straight back inline.
        check(&mut log, 200_000, "inline");
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn entries_that_do_not_fit_u16_offsets_go_to_the_large_layout_from_any_layout() {
        // Within u16 ms of the oldest live entry (not of the first one) still fits: the base
        // moves up when needed.
        for (n, expected) in [(1, "inline"), (15, "mid")] {
            let p = [pol(100, 65_500)];
            let mut log = Log::new();
            for i in 0..n {
                log.check(i, &p, 1);
            }
            for i in 600..606 {
                log.check(i, &p, 1);
            }
            // The first n entries leave; 65,550 ms from the first, 64,950 from the oldest.
            log.check(65_550, &p, 1);
            assert_eq!(layout(&log), expected);
            let mut want: Vec<(u64, u64)> = (600..606).map(|t| (t, 1)).collect();
            want.push((65_550, 1));
            assert_eq!(log.entries().collect::<Vec<_>>(), want);
        }
        let p = [pol(100, 3_600_000)];
        // A gap wider than u16 milliseconds, from the inline layout and from the mid one.
        for n in [1, 20] {
            let mut log = Log::new();
            for i in 0..n {
                log.check(i, &p, 1);
            }
            log.check(70_000, &p, 1);
            assert_eq!(layout(&log), "large");
            let mut want: Vec<(u64, u64)> = (0..n).map(|i| (i, 1)).collect();
            want.push((70_000, 1));
            assert_eq!(log.entries().collect::<Vec<_>>(), want);
            assert_eq!(log.peek(70_000, &p, 1).remaining, 100 - n - 2);
        }
    }

    #[test]
    fn weighted_entries_go_to_the_large_layout_from_every_phase_and_leave_with_it() {
        let p = [pol(1000, 10_000)];
        for n in [0, 3, SMALL_CAPACITY, 20, MID_CAPACITY, 40] {
            let mut log = Log::new();
            let mut want = Vec::new();
            for i in 0..n as u64 {
                log.check(i * 10, &p, 1);
                want.push((i * 10, 1));
            }
            log.check(1000, &p, 3);
            want.push((1000, 3));
            assert_eq!(layout(&log), "large", "after {n} unit entries");
            log.check(1001, &p, 1);
            want.push((1001, 1));
            assert_eq!(log.entries().collect::<Vec<_>>(), want);
            let used: u64 = want.iter().map(|e| e.1).sum();
            assert_eq!(log.peek(1001, &p, 1).remaining, 1000 - used - 1);
            // Once the weighted entry has left, the unit entries that remain go back inline.
            log.check(11_000, &p, 1);
            assert_eq!(
                log.entries().collect::<Vec<_>>(),
                vec![(1001, 1), (11_000, 1)]
            );
            assert_eq!(layout(&log), "inline", "after {n} unit entries");
        }
    }

    #[test]
    fn timestamps_from_2_pow_48_use_a_boxed_layout_with_a_full_base() {
        let p = [pol(100, 60_000)];
        let big = 1u64 << 48;
        // Decoded: an inline log whose next entry crosses 2^48 moves to the mid box.
        let mut log = Log::from_entries(60_000, [(big - 2, 1), (big + 3, 1)]).unwrap();
        assert_eq!(layout(&log), "mid");
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(big - 2, 1), (big + 3, 1)]
        );
        // It stays boxed when it shrinks: the inline base holds 48 bits only.
        log.check(big + 61_000, &p, 1);
        assert_eq!(log.entries().collect::<Vec<_>>(), vec![(big + 61_000, 1)]);
        assert_eq!(layout(&log), "mid");
        assert_eq!(log.peek(big + 61_000, &p, 1).remaining, 98);
        // Up to i64::MAX, in every layout.
        let top = i64::MAX as u64;
        for n in [1, 12, 40] {
            let entries: Vec<(u64, u64)> = (0..n).map(|i| (top - 100 + i, 1)).collect();
            let log = Log::from_entries(60_000, entries.clone()).unwrap();
            assert_eq!(
                layout(&log),
                if n <= MID_CAPACITY as u64 {
                    "mid"
                } else {
                    "large"
                }
            );
            assert_eq!(log.entries().collect::<Vec<_>>(), entries);
            assert_eq!(log.peek(top, &[pol(100, 60_000)], 1).remaining, 100 - n - 1);
        }
        let weighted = Log::from_entries(60_000, [(top, 7)]).unwrap();
        assert_eq!(layout(&weighted), "large");
        assert_eq!(weighted.entries().collect::<Vec<_>>(), vec![(top, 7)]);
        // Recording near i64::MAX (RATELIMIT.RECORD's largest `now_ms`) works the same way.
        let mut log = Log::new();
        log.check(top - 1000, &p, 1);
        log.check(top - 999, &p, 1);
        assert_eq!(layout(&log), "mid");
        assert_eq!(
            log.entries().collect::<Vec<_>>(),
            vec![(top - 1000, 1), (top - 999, 1)]
        );
    }

    #[test]
    fn a_clock_that_steps_back_keeps_every_layout_ordered() {
        let p = [pol(100, 60_000)];
        for (n, expected) in [(3, "inline"), (20, "mid"), (40, "large")] {
            let mut log = Log::new();
            for i in 0..n {
                log.check(10_000 + i * 100, &p, 1);
            }
            let newest = log.newest_ms().unwrap();
            assert!(log.check(5_000, &p, 1).0.allowed);
            assert_eq!(layout(&log), expected);
            assert_eq!(log.len(), n as usize + 1);
            let times: Vec<u64> = log.entries().map(|e| e.0).collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{expected}: {times:?}"
            );
            assert_eq!(times.last(), Some(&newest));
        }
    }

    fn is_wide(log: &Log) -> bool {
        matches!(log.0, Repr::Large { wide: true, .. })
    }

    #[test]
    fn a_log_past_2_pow_64_sums_exactly_and_returns_to_the_fast_path_once_it_expires() {
        let max = MAX_AMOUNT;
        let mut log = Log::new();
        assert!(log.check(0, &[pol(1, 10_000)], 1).0.allowed);
        assert!(log.check(1, &[pol(max, 1)], max).0.allowed);
        assert!(!is_wide(&log), "2^63 in all");
        assert!(log.check(2, &[pol(max, 1)], max).0.allowed);
        assert!(log.check(3, &[pol(max, 1)], 2).0.allowed);
        assert!(is_wide(&log), "2^64 + 1 in all");
        // Exact: 2^64 + 1 used. Cost 3 fits once the entries at 0, 1 and 2 (2^64 - 1) have
        // left; cost 4 needs the entry at 3 gone too.
        assert_eq!(
            log.peek(3, &[pol(5, 5000)], 3),
            decision(false, 5, 0, 4999, 5000)
        );
        assert_eq!(
            log.peek(3, &[pol(5, 5000)], 4),
            decision(false, 5, 0, 5000, 5000)
        );
        assert_eq!(
            log.peek(5001, &[pol(5, 5000)], 1),
            decision(false, 5, 0, 1, 2)
        );
        assert_eq!(
            log.peek(5002, &[pol(5, 5000)], 3),
            decision(true, 5, 0, 0, 5000)
        );
        // The round trip keeps the exact sums.
        let copy = Log::from_entries(log.horizon_ms(), log.entries()).unwrap();
        assert!(is_wide(&copy));
        assert_eq!(
            copy.peek(3, &[pol(5, 5000)], 3),
            log.peek(3, &[pol(5, 5000)], 3)
        );
        // Once the entry at 1 has left the horizon (10 s), the live total fits u64 again.
        assert!(log.check(10_001, &[pol(max, 1)], 1).0.allowed);
        assert!(!is_wide(&log));
        assert_eq!(log.len(), 3);
        // 2^63 + 2 left: more than any limit, and free once the entry at 2 leaves.
        assert_eq!(
            log.peek(10_001, &[pol(max, 10_000)], 0),
            decision(false, max, 0, 1, 10_000)
        );
    }

    #[test]
    fn a_large_log_of_unit_entries_costs_about_4_bytes_each() {
        let mut log = Log::new();
        let p = [pol(1_000_000_000, 3_600_000)];
        for i in 0..1000 {
            log.check(1_700_000_000_000 + i / 50, &p, 1);
        }
        let bytes = std::mem::size_of::<Log>() + log.heap_bytes();
        assert!(bytes <= 1000 * 4 + 200, "{bytes} B for 1,000 entries");
    }

    #[test]
    fn unit_cost_logs_stay_exact_across_layout_changes() {
        for seed in 100..120 {
            let mut rng = Lcg(seed);
            let policies = [pol(12, 2000), pol(45, 20_000)];
            let mut log = Log::new();
            let mut admitted: Vec<u64> = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut now = 0;
            for _ in 0..3000 {
                // Bursts and long pauses move the log between layouts.
                now += if rng.next(50) == 0 {
                    30_000 + rng.next(60_000)
                } else {
                    rng.next(400)
                };
                let (d, recorded) = log.check(now, &policies, 1);
                let fits = policies.iter().all(|p| {
                    admitted.iter().filter(|&&t| t + p.window_ms > now).count() < p.limit as usize
                });
                assert_eq!(d.allowed, fits, "seed {seed} t={now}");
                if recorded {
                    admitted.push(now);
                }
                let live: Vec<u64> = admitted
                    .iter()
                    .copied()
                    .filter(|&t| t + 20_000 > now)
                    .collect();
                let kept: Vec<u64> = log
                    .entries()
                    .map(|e| e.0)
                    .filter(|&t| t + 20_000 > now)
                    .collect();
                assert_eq!(kept, live, "seed {seed} t={now}");
                seen.insert(layout(&log));
            }
            assert_eq!(seen.len(), 3, "seed {seed} visits every layout: {seen:?}");
        }
    }

    #[test]
    fn in_any_window_the_recorded_cost_never_exceeds_the_limit() {
        for seed in 0..20 {
            let mut rng = Lcg(seed);
            let policies = [pol(7, 1000), pol(20, 5000)];
            let mut log = Log::new();
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            let mut now = 0;
            for _ in 0..2000 {
                now += rng.next(60);
                let cost = 1 + rng.next(3);
                let (d, recorded) = log.check(now, &policies, cost);
                // Cross-check against a brute-force count over everything admitted so far.
                let fits = policies.iter().all(|p| {
                    let used: u64 = admitted
                        .iter()
                        .filter(|(t, _)| t + p.window_ms > now)
                        .map(|(_, c)| c)
                        .sum();
                    used + cost <= p.limit
                });
                assert_eq!(d.allowed, fits, "seed {seed} t={now}");
                if recorded {
                    admitted.push((now, cost));
                } else {
                    // retry_after is exact: one ms earlier is still denied, at it allowed.
                    let r = d.retry_after_ms as u64;
                    assert!(log.peek(now + r, &policies, cost).allowed);
                    if r > 0 {
                        assert!(!log.peek(now + r - 1, &policies, cost).allowed);
                    }
                }
            }
            for p in &policies {
                for &(t, _) in &admitted {
                    let in_window: u64 = admitted
                        .iter()
                        .filter(|(u, _)| *u >= t && *u < t + p.window_ms)
                        .map(|(_, c)| c)
                        .sum();
                    assert!(in_window <= p.limit, "seed {seed}: window at {t}");
                }
            }
        }
    }
}
