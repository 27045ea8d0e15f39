//! What a polling thread does when its rings are empty.
//!
//! Busy-spinning gives the lowest wake-up latency but burns a core; parking frees the
//! core but costs a slow wake-up (about 200 us on these VMs). The default,
//! spin-then-park, spins briefly (catching the next tick of an active stream within
//! nanoseconds), then yields, then sleeps in short slices, so a 2-core machine still
//! has CPU for the API and the OS.
//!
//! A thread whose producers ring its [`Doorbell`] (the engine, the API fan-out, the
//! journal, the order fan-out) arms it and sleeps `max_park_micros`: arriving work
//! wakes it within microseconds, so a longer sleep costs no latency, and the timeout
//! only bounds how late time-driven work and the stop flag are seen. Except on a
//! dense stream (the last idle spell ended within its first sleep: shorter than twice
//! `park_micros`): there the first sleep is a plain `park_micros`, which batches the
//! items due meanwhile instead of paying a wake-up (a system call on the producer, a
//! context switch here) for each (measured at 20,000 steps a second: waking the API
//! fan-out for every engine round cost it 4x the CPU). A thread without a doorbell
//! (nobody wakes it) times out and polls again: each sleep doubles, from
//! `park_micros` up to `max_park_micros`, so an idle process costs a few wake-ups per
//! millisecond rather than tens of thousands per second, while a busy stream (which
//! resets the idler on every poll with work) never reaches the long sleeps.
//!
//! Spin-then-park also adapts its spin and yields: they only pay when work arrives
//! before the thread would have slept. When an idle spell lasts at least
//! `park_micros` (the first sleep, longer than any spin: a stream sparser than that,
//! such as 2,000 steps a second), no spin could have caught the work, so the next
//! spell spins and yields half as long, down to [`ADAPTIVE_SPIN_FLOOR`] polls of spin
//! and no yields. When a spell is shorter (where a longer spin might have caught it),
//! the next spins and yields twice as long, up to `spin_iterations` and
//! `yield_iterations`. The spell is timed, not counted in polls: on a busy machine one
//! `sched_yield` can give the core away for a whole time slice, so a spell that ended
//! while yielding says nothing about spinning. A sparse stream thus stops paying for
//! spins and yields: on a 2-core machine that CPU is the API's, and each yield under
//! load is a context switch with a request thread (measured: ~18,000 a second from the
//! engine and the fan-out at 2,000 steps a second under REST load). A denser stream
//! keeps the full spin, so its latency is unchanged, and a stream that turns dense
//! grows them back within a few messages.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::doorbell::Doorbell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleKind {
    /// Never give up the core. For isolated cores only.
    BusySpin,
    /// Spin, then `sched_yield` in a loop: fast, but the core shows 100% busy.
    SpinThenYield,
    /// Spin, yield a little, then sleep `park_micros` at a time.
    SpinThenPark,
}

/// `[*.idle]` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleConfig {
    pub strategy: IdleKind,
    /// Empty polls spent spinning before yielding.
    pub spin_iterations: u32,
    /// Empty polls spent yielding before sleeping (spin-then-park only).
    pub yield_iterations: u32,
    /// First sleep slice for spin-then-park, in microseconds.
    pub park_micros: u32,
    /// Longest sleep slice: each further empty poll doubles the slice up to this
    /// (spin-then-park only; below `park_micros` it counts as `park_micros`).
    #[serde(default = "default_max_park_micros")]
    pub max_park_micros: u32,
}

fn default_max_park_micros() -> u32 {
    IdleConfig::DEFAULT_MAX_PARK_MICROS
}

/// What an idle thread does next (for callers that cannot block the thread, such as
/// an async task: it yields or sleeps its own way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    Spin,
    Yield,
    /// Sleep this long.
    Park(Duration),
    /// Arm the thread's doorbell, poll once more, then sleep this long unless rung.
    Await(Duration),
}

impl Default for IdleConfig {
    fn default() -> Self {
        Self {
            strategy: IdleKind::SpinThenPark,
            spin_iterations: 2_000,
            yield_iterations: 50,
            park_micros: 50,
            max_park_micros: Self::DEFAULT_MAX_PARK_MICROS,
        }
    }
}

impl IdleConfig {
    /// The default longest sleep slice (1 ms).
    pub const DEFAULT_MAX_PARK_MICROS: u32 = 1_000;
    /// The longest sleep slice allowed: longer and ticks sit unread.
    pub const MAX_PARK_MICROS: u32 = 100_000;

    /// Spin-then-park with the given first and longest sleep slices and no spinning
    /// or yielding: for threads that are mostly idle and not on the hot path.
    pub const fn parked(park_micros: u32, max_park_micros: u32) -> Self {
        Self {
            strategy: IdleKind::SpinThenPark,
            spin_iterations: 0,
            yield_iterations: 0,
            park_micros,
            max_park_micros,
        }
    }

    /// Checks the numbers make sense; returns the offending key's name and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.strategy == IdleKind::SpinThenPark && self.park_micros == 0 {
            return Err(("park_micros", "must be at least 1 for spin-then-park"));
        }
        if self.park_micros > Self::MAX_PARK_MICROS {
            return Err(("park_micros", "must be at most 100000 (100 ms) or ticks sit unread"));
        }
        if self.max_park_micros > Self::MAX_PARK_MICROS {
            return Err(("max_park_micros", "must be at most 100000 (100 ms) or ticks sit unread"));
        }
        Ok(())
    }
}

/// The fewest empty polls spin-then-park spins after its spin has shrunk (or
/// `spin_iterations`, if fewer): see the module docs.
pub const ADAPTIVE_SPIN_FLOOR: u32 = 8;

/// Per-thread idle state.
#[derive(Debug)]
pub struct Idler {
    config: IdleConfig,
    empty_polls: u32,
    /// Empty polls to spin in this idle spell (spin-then-park adapts it; the other
    /// strategies spin `spin_iterations`).
    spin: u32,
    /// Empty polls to yield after the spin (spin-then-park adapts it like the spin).
    yields: u32,
    /// When the current idle spell began (its first empty poll; spin-then-park).
    spell_start: Option<Instant>,
    /// Rung by the thread's producers (see the module docs).
    doorbell: Option<Doorbell>,
    /// The last idle spell ended within its first sleep: the stream is dense.
    dense: bool,
}

impl Idler {
    pub fn new(config: IdleConfig) -> Self {
        Self {
            config,
            empty_polls: 0,
            spin: config.spin_iterations,
            yields: config.yield_iterations,
            spell_start: None,
            doorbell: None,
            dense: false,
        }
    }

    /// An idler whose thread is woken through `bell` (see the module docs): it binds
    /// the bell to the calling thread, so create it on the thread that sleeps.
    pub fn woken_by(mut self, bell: Doorbell) -> Self {
        bell.bind_current_thread();
        self.doorbell = Some(bell);
        self
    }

    /// Empty polls the next idle spell spins before it yields.
    pub fn spin_budget(&self) -> u32 {
        self.spin
    }

    /// Empty polls the next idle spell yields before it sleeps (spin-then-park).
    pub fn yield_budget(&self) -> u32 {
        self.yields
    }

    /// Call after a poll that found work. Ends an idle spell, if one was running, and
    /// (spin-then-park) adapts the next spell's spin and yields to how long it lasted.
    #[inline]
    pub fn reset(&mut self) {
        self.empty_polls = 0;
        if let Some(start) = self.spell_start.take() {
            self.end_spell(start.elapsed());
        }
    }

    /// Adapts spin-then-park's spin and yields to an idle spell that lasted `spent`
    /// (see the module docs). Time, not polls: on a busy machine one `sched_yield` can
    /// take a whole time slice, so a spell that ends while yielding says nothing about
    /// whether spinning pays.
    fn end_spell(&mut self, spent: Duration) {
        let c = &self.config;
        if c.strategy != IdleKind::SpinThenPark {
            return;
        }
        let floor = ADAPTIVE_SPIN_FLOOR.min(c.spin_iterations);
        let park = Duration::from_micros(u64::from(c.park_micros));
        // Dense: the work came within the first sleep (which, on a dense stream, is a
        // plain park_micros: so up to twice that, its wake-up late included).
        self.dense = spent < 2 * park;
        if spent < park {
            // Shorter than a first sleep: a (longer) spin and yields pay or might.
            self.spin = self.spin.saturating_mul(2).clamp(floor, c.spin_iterations);
            self.yields = self.yields.saturating_mul(2).max(1).min(c.yield_iterations);
        } else {
            // As long as a first sleep, longer than any spin: this spell's spin and
            // yields were wasted.
            self.spin = (self.spin / 2).max(floor);
            self.yields /= 2;
        }
    }

    /// Call after a poll that found nothing (a thread without a doorbell; with one,
    /// [`idle_or_poll`](Self::idle_or_poll)).
    #[inline]
    pub fn idle(&mut self) {
        self.idle_or_poll(|| 0);
    }

    /// Call after a poll that found nothing; `poll` polls once more, and is called
    /// only when the thread is about to sleep with its doorbell armed (so work pushed
    /// just before the arming is not left waiting a whole sleep). Returns that poll's
    /// work: 0 when the thread idled.
    #[inline]
    pub fn idle_or_poll(&mut self, poll: impl FnOnce() -> usize) -> usize {
        match self.next_pause() {
            Pause::Spin => std::hint::spin_loop(),
            Pause::Yield => std::thread::yield_now(),
            Pause::Park(d) => std::thread::park_timeout(d),
            Pause::Await(d) => {
                let Some(bell) = &self.doorbell else {
                    std::thread::park_timeout(d);
                    return 0;
                };
                bell.arm();
                let n = poll();
                if n == 0 {
                    std::thread::park_timeout(d);
                }
                bell.disarm();
                return n;
            }
        }
        0
    }

    /// Call after a poll that found nothing when the agent knows it has nothing to do
    /// for `wait` (a paced generator between steps): spin-then-park sleeps through it
    /// at once (at most `max_park_micros`, so the stop flag is still seen), one
    /// wake-up instead of a spin, yields and a doubling series of sleeps; the other
    /// strategies keep their own behaviour.
    #[inline]
    pub fn idle_for(&mut self, wait: Duration) {
        match self.config.strategy {
            IdleKind::SpinThenPark => {
                let cap = Duration::from_micros(u64::from(self.config.max_park_micros.max(self.config.park_micros)));
                std::thread::park_timeout(wait.min(cap));
            }
            IdleKind::BusySpin | IdleKind::SpinThenYield => self.idle(),
        }
    }

    /// Counts an empty poll and says what to do about it, without doing it.
    #[inline]
    pub fn next_pause(&mut self) -> Pause {
        let n = self.empty_polls;
        self.empty_polls = n.saturating_add(1);
        let c = &self.config;
        if n == 0 && c.strategy == IdleKind::SpinThenPark {
            self.spell_start = Some(Instant::now());
        }
        let patient = self.spin.saturating_add(self.yields);
        match c.strategy {
            IdleKind::BusySpin => Pause::Spin,
            IdleKind::SpinThenYield if n < c.spin_iterations => Pause::Spin,
            IdleKind::SpinThenYield => Pause::Yield,
            IdleKind::SpinThenPark if n < self.spin => Pause::Spin,
            IdleKind::SpinThenPark if n < patient => Pause::Yield,
            IdleKind::SpinThenPark => {
                let cap = u64::from(c.max_park_micros.max(c.park_micros));
                // The k-th sleep lasts park_micros * 2^k, capped.
                let k = (n - patient).min(20);
                if self.doorbell.is_some() {
                    if k == 0 && self.dense {
                        // A dense stream: its next item is due within the first slice,
                        // which batches what arrives meanwhile without a wake-up each.
                        return Pause::Park(Duration::from_micros(u64::from(c.park_micros)));
                    }
                    // Work wakes the thread: sleep the longest slice.
                    return Pause::Await(Duration::from_micros(cap));
                }
                let micros = u64::from(c.park_micros).saturating_mul(1u64 << k).min(cap);
                Pause::Park(Duration::from_micros(micros))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = IdleKind> {
        prop_oneof![
            Just(IdleKind::BusySpin),
            Just(IdleKind::SpinThenYield),
            Just(IdleKind::SpinThenPark)
        ]
    }

    proptest! {
        /// Over any settings: spin first, then yield, then (spin-then-park) sleeps that
        /// start at park_micros, never shrink, double until the cap and stay there;
        /// a poll with work starts the sequence over.
        #[test]
        fn pauses_follow_the_strategy(
            strategy in kind(),
            spin in 0u32..50,
            yields in 0u32..50,
            park in 1u32..2_000,
            max in 0u32..100_000,
            polls in 1usize..200,
        ) {
            let c = IdleConfig { strategy, spin_iterations: spin, yield_iterations: yields, park_micros: park, max_park_micros: max };
            let cap = u64::from(max.max(park));
            let mut idler = Idler::new(c);
            let run = |idler: &mut Idler| (0..polls).map(|_| idler.next_pause()).collect::<Vec<_>>();
            let first = run(&mut idler);
            // A poll with work starts the sequence over, with the same shape (the
            // adapted spin and yields aside: a fresh idler with them gives the same
            // pauses).
            idler.reset();
            let (spin_now, yields_now) = (idler.spin_budget(), idler.yield_budget());
            let again = run(&mut idler);
            let mut fresh = Idler::new(c);
            (fresh.spin, fresh.yields) = (spin_now, yields_now);
            prop_assert_eq!(&again, &run(&mut fresh));
            let mut last: Option<u64> = None;
            for (i, p) in first.iter().enumerate() {
                let i = i as u64;
                match (strategy, *p) {
                    (IdleKind::BusySpin, p) => prop_assert_eq!(p, Pause::Spin),
                    (_, Pause::Spin) => prop_assert!(i < u64::from(spin)),
                    (IdleKind::SpinThenYield, p) => prop_assert_eq!(p, Pause::Yield),
                    (_, Pause::Yield) => prop_assert!(i >= u64::from(spin) && i < u64::from(spin + yields)),
                    (_, Pause::Park(d)) => {
                        prop_assert!(i >= u64::from(spin + yields));
                        let us = d.as_micros() as u64;
                        match last {
                            None => prop_assert_eq!(us, u64::from(park).min(cap)),
                            Some(prev) => prop_assert_eq!(us, (prev * 2).min(cap)),
                        }
                        last = Some(us);
                    }
                    (_, Pause::Await(_)) => prop_assert!(false, "awaited a doorbell it does not have"),
                }
            }
        }
    }

    proptest! {
        /// Over any settings and any idle spells (k empty polls, then work after
        /// `spent` us): each spell spins exactly its spin budget (or k), then
        /// (spin-then-park) yields exactly its yield budget (or what is left of k),
        /// then sleeps; spin-then-park's budgets double after a spell shorter than
        /// `park_micros` and halve after a longer one, always within
        /// [min(floor, spin_iterations), spin_iterations] and [0, yield_iterations];
        /// the other strategies always spin `spin_iterations`.
        #[test]
        fn the_spin_adapts_to_how_long_idle_spells_last(
            strategy in kind(),
            spin in 0u32..3_000,
            yields in 0u32..50,
            park in 1u32..100,
            spells in proptest::collection::vec((0u32..4_000, 0u64..200), 1..60),
        ) {
            let c = IdleConfig { strategy, spin_iterations: spin, yield_iterations: yields, park_micros: park, max_park_micros: 1_000 };
            let floor = ADAPTIVE_SPIN_FLOOR.min(spin);
            let mut idler = Idler::new(c);
            for (k, spent) in spells {
                let (before, yields_before) = (idler.spin_budget(), idler.yield_budget());
                let pauses: Vec<Pause> = (0..k).map(|_| idler.next_pause()).collect();
                let spins = pauses.iter().take_while(|p| **p == Pause::Spin).count() as u32;
                let yielded = pauses.iter().skip(spins as usize).take_while(|p| **p == Pause::Yield).count() as u32;
                match strategy {
                    IdleKind::BusySpin => prop_assert_eq!(spins, k),
                    IdleKind::SpinThenYield => prop_assert_eq!((spins, yielded), (k.min(spin), k - k.min(spin))),
                    IdleKind::SpinThenPark => {
                        prop_assert_eq!(spins, k.min(before));
                        prop_assert_eq!(yielded, (k - spins).min(yields_before));
                        let rest = &pauses[(spins + yielded) as usize..];
                        prop_assert!(rest.iter().all(|p| matches!(p, Pause::Park(_))));
                    }
                }
                // Work ends the spell: as `reset`, with the spell's length given.
                prop_assert_eq!(idler.spell_start.is_some(), k > 0 && strategy == IdleKind::SpinThenPark);
                idler.empty_polls = 0;
                if idler.spell_start.take().is_some() {
                    idler.end_spell(Duration::from_micros(spent));
                }
                let (after, yields_after) = (idler.spin_budget(), idler.yield_budget());
                if strategy != IdleKind::SpinThenPark {
                    prop_assert_eq!((after, yields_after), (spin, yields));
                } else if k == 0 {
                    prop_assert_eq!((after, yields_after), (before, yields_before));
                } else if spent < u64::from(park) {
                    prop_assert_eq!(after, (before * 2).clamp(floor, spin));
                    prop_assert_eq!(yields_after, (yields_before * 2).max(1).min(yields));
                } else {
                    prop_assert_eq!(after, (before / 2).max(floor));
                    prop_assert_eq!(yields_after, yields_before / 2);
                }
                prop_assert!(strategy != IdleKind::SpinThenPark || (floor..=spin).contains(&after));
                prop_assert!(yields_after <= yields);
            }
        }
    }

    /// A stream sparser than the first sleep stops spinning (down to the floor) and
    /// yielding, and a dense one gets the whole spin and yields back within a few
    /// messages.
    #[test]
    fn a_sparse_stream_stops_spinning_and_a_dense_one_spins_again() {
        let c = IdleConfig::default();
        let park = Duration::from_micros(u64::from(c.park_micros));
        let mut idler = Idler::new(c);
        let spell = |idler: &mut Idler, spent: Duration| {
            let _ = idler.next_pause();
            idler.empty_polls = 0;
            idler.spell_start = None;
            idler.end_spell(spent);
        };
        for _ in 0..16 {
            spell(&mut idler, park * 10);
        }
        assert_eq!((idler.spin_budget(), idler.yield_budget()), (ADAPTIVE_SPIN_FLOOR, 0));
        for _ in 0..16 {
            spell(&mut idler, park / 10);
        }
        assert_eq!(
            (idler.spin_budget(), idler.yield_budget()),
            (c.spin_iterations, c.yield_iterations)
        );
    }

    /// `reset` times the spell with the real clock: one that outlasts `park_micros`
    /// shrinks the spin; a poll with work outside a spell changes nothing.
    #[test]
    fn reset_times_the_spell() {
        let c = IdleConfig::default();
        let mut idler = Idler::new(c);
        idler.reset();
        assert_eq!(idler.spin_budget(), c.spin_iterations);
        let _ = idler.next_pause();
        std::thread::sleep(Duration::from_micros(u64::from(c.park_micros)) * 20);
        idler.reset();
        assert_eq!(idler.spin_budget(), c.spin_iterations / 2);
        assert!(idler.spell_start.is_none());
    }

    /// With a doorbell the spin and yields are as without one, and the sleeps await
    /// the doorbell for the longest slice (work wakes the thread), except a dense
    /// stream's first; the idler binds the bell to the thread that made it, and
    /// ringing an armed bell wakes that thread.
    #[test]
    fn a_thread_with_a_doorbell_sleeps_the_longest_slice_at_once() {
        let c = IdleConfig {
            strategy: IdleKind::SpinThenPark,
            spin_iterations: 2,
            yield_iterations: 1,
            park_micros: 50,
            max_park_micros: 800,
        };
        let bell = Doorbell::new();
        let mut idler = Idler::new(c).woken_by(bell.clone());
        let pauses: Vec<Pause> = (0..6).map(|_| idler.next_pause()).collect();
        let long = Pause::Await(Duration::from_micros(800));
        assert_eq!(pauses, [Pause::Spin, Pause::Spin, Pause::Yield, long, long, long]);
        // After a spell shorter than park_micros (a dense stream) the first sleep is
        // a plain park_micros; after a longer one, the doorbell at once.
        idler.end_spell(Duration::from_micros(10));
        idler.empty_polls = 0;
        let pauses: Vec<Pause> = (0..6).map(|_| idler.next_pause()).collect();
        let short = Pause::Park(Duration::from_micros(50));
        assert_eq!(pauses, [Pause::Spin, Pause::Spin, Pause::Yield, short, long, long]);
        idler.end_spell(Duration::from_micros(500));
        idler.empty_polls = 0;
        let pauses: Vec<Pause> = (0..4).map(|_| idler.next_pause()).collect();
        // (the yields halved to none after that long spell)
        assert_eq!(pauses, [Pause::Spin, Pause::Spin, long, long]);
        bell.arm();
        bell.ring();
        assert_eq!(bell.wakes(), 1, "bound to this thread");
        let mut plain = Idler::new(c);
        let first: Vec<Pause> = (0..4).map(|_| plain.next_pause()).collect();
        assert_eq!(first[3], Pause::Park(Duration::from_micros(50)));
        // The unpark's token, used up here rather than by a later test's park.
        std::thread::park_timeout(Duration::from_millis(1));
    }

    #[test]
    fn the_longest_sleep_is_bounded() {
        let mut c = IdleConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.max_park_micros = IdleConfig::MAX_PARK_MICROS + 1;
        assert_eq!(c.validate().map_err(|e| e.0), Err("max_park_micros"));
        c.max_park_micros = 0;
        c.park_micros = 0;
        assert_eq!(c.validate().map_err(|e| e.0), Err("park_micros"));
    }

    #[test]
    fn a_config_without_max_park_micros_gets_the_default() {
        let c: IdleConfig = toml::from_str(
            "strategy = \"spin-then-park\"\nspin_iterations = 1\nyield_iterations = 2\npark_micros = 3\n",
        )
        .unwrap();
        assert_eq!(c.max_park_micros, IdleConfig::DEFAULT_MAX_PARK_MICROS);
        assert!(toml::from_str::<IdleConfig>(
            "strategy = \"busy-spin\"\nspin_iterations = 1\nyield_iterations = 2\npark_micros = 3\nmax_park = 4\n"
        )
        .is_err());
    }
}
