//! The log's memory layout.
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
//!
//! A log grows into the next layout when an entry does not fit, and a boxed log moves back to
//! a smaller layout once its live entries fit in half of it (half, so that a log at a boundary
//! does not move back and forth).

use super::{exact_cost, AnyView, Log, View, MAX_WINDOW_MS};

/// Entries the inline layout holds.
pub const SMALL_CAPACITY: usize = 10;

/// Entries the mid layout holds: its length byte and u16 offsets fill 64 bytes.
pub const MID_CAPACITY: usize = 31;

/// Inline timestamps stay below 2^48 ms (the year 10889), so the inline base fits in 48 bits.
const INLINE_LIMIT_MS: u64 = 1 << 48;

// Redis allocates `Log` itself: 32 bytes is jemalloc's 32-byte class (the next one is 48).
const _: () = assert!(std::mem::size_of::<Log>() == 32);
// The mid layout's box is exactly jemalloc's 64-byte class.
const _: () = assert!(std::mem::size_of::<Short<MID_CAPACITY>>() == 64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Repr {
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
        pub(super) enum Len {
            $($name = $n),*
        }

        impl Len {
            /// The `Len` of `n` (compiles to a range check: `Len::of(n) as usize == n`).
            pub(super) fn of(n: usize) -> Len {
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
pub(super) struct Short<const N: usize> {
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
pub(super) struct Large {
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
    pub(super) fn trim(&mut self, start: usize, wide: &mut bool) {
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
    pub fn horizon_ms(&self) -> u64 {
        match &self.0 {
            Repr::Inline { horizon, .. }
            | Repr::Mid { horizon, .. }
            | Repr::Large { horizon, .. } => u64::from(*horizon),
        }
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

    pub(super) fn horizon_mut(&mut self) -> &mut u32 {
        match &mut self.0 {
            Repr::Inline { horizon, .. }
            | Repr::Mid { horizon, .. }
            | Repr::Large { horizon, .. } => horizon,
        }
    }

    /// Appends `cost` at `ts` (not older than the newest entry), moving to a larger layout if
    /// the entry does not fit this one.
    pub(super) fn push(&mut self, ts: u64, cost: u64) {
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
    pub(super) fn trim(&mut self, start: usize) {
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

    pub(super) fn view(&self) -> AnyView<'_> {
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
