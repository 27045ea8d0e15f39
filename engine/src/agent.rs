//! The one place threads start: every long-lived thread of the process is either an
//! [`Agent`] (a component that polls: `poll(&mut self) -> usize`, as in Agrona and
//! exchange-core) run by [`spawn_agent`] with its name, core, idle strategy and stop
//! flag, or a body that blocks on I/O (a WebSocket reader, a writer waiting on a
//! channel, an async runtime) run by [`spawn_thread`].
//!
//! Both return a [`ThreadHandle`] that stops and joins its thread and reports a panic
//! (with the thread's name and the panic message) instead of swallowing it. A tidy
//! test checks that `std::thread::Builder` appears in no other file, so thread naming,
//! pinning and idling stay uniform.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::affinity::pin_current_thread;
use crate::doorbell::Doorbell;
use crate::idle::{IdleConfig, Idler};

/// A component that does its work in small steps on a thread of its own.
pub trait Agent: Send + 'static {
    /// Names the agent in log lines.
    fn name(&self) -> &str;

    /// Does one round of work; returns how much was done (0: nothing to do, so the
    /// thread idles by its strategy before the next poll).
    fn poll(&mut self) -> usize;

    /// After a poll that found nothing: how long the agent knows it will have nothing
    /// to do (a paced generator until its next step), so an idle thread can sleep
    /// through it at once. `None` (the default): unknown, idle by the strategy.
    fn idle_for(&self) -> Option<std::time::Duration> {
        None
    }

    /// Runs once on the agent's thread before the first poll.
    fn on_start(&mut self) {}

    /// Asked before each poll once the stop flag is set: `true` ends the thread (the
    /// default: stop at once). An agent with something to hand over first (a ring to
    /// drain, a backlog to flush) returns `false` until it is done and keeps being
    /// polled meanwhile.
    fn ready_to_stop(&mut self) -> bool {
        true
    }

    /// Runs once on the agent's thread after the last poll.
    fn on_close(&mut self) {}
}

/// Why a thread could not start or did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the OS could not start thread {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("thread {name} panicked: {message}")]
    Panicked { name: String, message: String },
}

/// Where and how an agent runs.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The OS thread's name (`top -H`, panics, logs).
    pub name: String,
    /// Core to pin the thread to; `None` runs unpinned.
    pub core: Option<usize>,
    /// What the thread does when a poll finds nothing.
    pub idle: IdleConfig,
    /// Set to end the thread (see [`Agent::ready_to_stop`]).
    pub stop: Arc<AtomicBool>,
    /// Rung by the agent's producers when they hand it work (see [`Doorbell`]).
    pub doorbell: Option<Doorbell>,
}

impl AgentSpec {
    pub fn new(name: impl Into<String>, idle: IdleConfig, stop: &Arc<AtomicBool>) -> Self {
        Self {
            name: name.into(),
            core: None,
            idle,
            stop: Arc::clone(stop),
            doorbell: None,
        }
    }

    /// Lets the agent's producers wake it through `bell` when it sleeps.
    pub fn woken_by(mut self, bell: &Doorbell) -> Self {
        self.doorbell = Some(bell.clone());
        self
    }

    /// Pins the thread to `core` (when `Some`).
    pub fn on_core(mut self, core: Option<usize>) -> Self {
        self.core = core;
        self
    }
}

/// A running thread: stop it, join it, learn whether it panicked.
#[derive(Debug)]
pub struct ThreadHandle<T = ()> {
    name: String,
    stop: Option<Arc<AtomicBool>>,
    join: JoinHandle<T>,
}

impl<T> ThreadHandle<T> {
    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Sets the thread's stop flag (an agent's, or one given with
    /// [`ThreadHandle::with_stop`]); does not wait.
    pub fn stop(&self) {
        if let Some(s) = &self.stop {
            s.store(true, Ordering::Release);
            // A sleeping thread sees the flag now rather than after its sleep.
            self.join.thread().unpark();
        }
    }

    /// The flag [`ThreadHandle::stop`] sets, for a thread whose body watches one.
    pub fn with_stop(mut self, stop: &Arc<AtomicBool>) -> Self {
        self.stop = Some(Arc::clone(stop));
        self
    }

    /// Waits for the thread to end; a panic comes back as [`AgentError::Panicked`].
    pub fn join(self) -> Result<T, AgentError> {
        let name = self.name;
        self.join.join().map_err(|payload| AgentError::Panicked {
            message: panic_message(payload.as_ref()),
            name,
        })
    }

    /// Stops the thread, then waits for it.
    pub fn stop_and_join(self) -> Result<T, AgentError> {
        self.stop();
        self.join()
    }

    /// Waits for the thread; a panic is logged (an error line with the thread's name
    /// and message), not lost. Returns whether the thread ended cleanly.
    pub fn join_logged(self) -> bool {
        match self.join() {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "thread ended abnormally");
                false
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// Starts `body` on a thread named `name`, pinned to `core` when given (a core that
/// cannot be had is logged and the thread runs unpinned: it still works, and the
/// operator sees why). For threads that block on I/O rather than poll; the body
/// watches its own stop flag (attach it with [`ThreadHandle::with_stop`]).
pub fn spawn_thread<T, F>(name: impl Into<String>, core: Option<usize>, body: F) -> Result<ThreadHandle<T>, AgentError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let name = name.into();
    let thread_name = name.clone();
    let join = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Some(core) = core {
                if let Err(e) = pin_current_thread(core) {
                    tracing::error!(thread = %thread_name, core, error = %e, "could not pin the thread; it runs unpinned");
                }
            }
            body()
        })
        .map_err(|source| AgentError::Spawn {
            name: name.clone(),
            source,
        })?;
    Ok(ThreadHandle { name, stop: None, join })
}

/// Starts `agent` on a thread of its own: `on_start`, then `poll` until the stop flag
/// is set and the agent is [ready to stop](Agent::ready_to_stop), idling by
/// `spec.idle` after every poll that found nothing, then `on_close`.
pub fn spawn_agent<A: Agent>(mut agent: A, spec: AgentSpec) -> Result<ThreadHandle<()>, AgentError> {
    let stop = Arc::clone(&spec.stop);
    let idle = spec.idle;
    let doorbell = spec.doorbell;
    let handle = spawn_thread(spec.name, spec.core, move || {
        let idler = match doorbell {
            Some(bell) => Idler::new(idle).woken_by(bell),
            None => Idler::new(idle),
        };
        agent.on_start();
        run(&mut agent, &stop, idler);
        agent.on_close();
    })?;
    Ok(handle.with_stop(&spec.stop))
}

/// The agent loop, on the calling thread (for benches and tests that drive an agent
/// without a thread of its own).
pub fn run<A: Agent + ?Sized>(agent: &mut A, stop: &AtomicBool, mut idler: Idler) {
    loop {
        if stop.load(Ordering::Acquire) && agent.ready_to_stop() {
            return;
        }
        if agent.poll() > 0 {
            idler.reset();
        } else if let Some(wait) = agent.idle_for() {
            idler.idle_for(wait);
        } else if idler.idle_or_poll(|| agent.poll()) > 0 {
            idler.reset();
        }
    }
}

/// The engine is an agent: poll the input rings and order queue, then time-driven work.
impl Agent for crate::Engine {
    fn name(&self) -> &str {
        "engine"
    }

    #[inline]
    fn poll(&mut self) -> usize {
        // One clock read per round: published events carry it as `engine_ts`.
        let now = crate::UnixNanos::now();
        self.set_clock(now);
        let n = crate::Engine::poll(self);
        self.housekeeping(now);
        self.wake_consumers();
        n
    }

    fn on_start(&mut self) {
        tracing::info!("engine started");
    }

    fn on_close(&mut self) {
        tracing::info!("engine stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idle::IdleKind;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    /// Does `work[i]` units at poll i (0 after the list ends), and refuses to stop
    /// while `backlog` is not zero (each poll after stop takes one off).
    struct Script {
        work: Vec<usize>,
        polls: Arc<AtomicUsize>,
        backlog: usize,
        started: bool,
        closed: Arc<AtomicBool>,
    }

    impl Agent for Script {
        fn name(&self) -> &str {
            "script"
        }
        fn poll(&mut self) -> usize {
            assert!(self.started, "polled before on_start");
            let i = self.polls.fetch_add(1, Ordering::SeqCst);
            self.work.get(i).copied().unwrap_or(0)
        }
        fn on_start(&mut self) {
            self.started = true;
        }
        fn ready_to_stop(&mut self) -> bool {
            if self.backlog == 0 {
                return true;
            }
            self.backlog -= 1;
            false
        }
        fn on_close(&mut self) {
            self.closed.store(true, Ordering::SeqCst);
        }
    }

    fn parked() -> IdleConfig {
        IdleConfig {
            strategy: IdleKind::SpinThenPark,
            spin_iterations: 0,
            yield_iterations: 0,
            park_micros: 100,
            max_park_micros: 1_000,
        }
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the agent does, it starts once, is polled until stopped, is asked
        /// again while it holds a backlog (and polled meanwhile), then closes once,
        /// on a thread with the name given.
        #[test]
        fn runs_polls_drains_and_closes(work in proptest::collection::vec(0usize..4, 0..64), backlog in 0usize..20) {
            let polls = Arc::new(AtomicUsize::new(0));
            let closed = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let n = work.len();
            let agent = Script { work, polls: Arc::clone(&polls), backlog, started: false, closed: Arc::clone(&closed) };
            let h = spawn_agent(agent, AgentSpec::new("agent-test", parked(), &stop)).unwrap();
            prop_assert_eq!(h.name(), "agent-test");
            wait_until("the scripted polls", || polls.load(Ordering::SeqCst) >= n);
            prop_assert!(!h.is_finished());
            prop_assert!(!closed.load(Ordering::SeqCst));
            let before = polls.load(Ordering::SeqCst);
            h.stop_and_join().unwrap();
            prop_assert!(closed.load(Ordering::SeqCst));
            // One poll per refusal to stop, none after the agent agreed.
            let after = polls.load(Ordering::SeqCst);
            prop_assert!(after >= before + backlog, "{} polls after stop, backlog {}", after - before, backlog);
        }
    }

    #[test]
    fn a_thread_has_its_name_and_returns_its_value() {
        let h = spawn_thread("named-thread", None, || {
            std::thread::current().name().map(str::to_owned)
        })
        .unwrap();
        assert_eq!(h.join().unwrap().as_deref(), Some("named-thread"));
    }

    #[test]
    fn a_panic_is_reported_with_the_thread_name_and_message() {
        for (body, message) in [
            (
                Box::new(|| panic!("static text")) as Box<dyn FnOnce() + Send>,
                "static text",
            ),
            (Box::new(|| panic!("formatted {}", 42)), "formatted 42"),
            (Box::new(|| std::panic::panic_any(7u32)), "(a panic without a message)"),
        ] {
            let h = spawn_thread("doomed", None, body).unwrap();
            match h.join() {
                Err(AgentError::Panicked { name, message: m }) => {
                    assert_eq!(name, "doomed");
                    assert_eq!(m, message);
                }
                other => panic!("expected a reported panic, got {other:?}"),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        struct Boom;
        impl Agent for Boom {
            fn name(&self) -> &str {
                "boom"
            }
            fn poll(&mut self) -> usize {
                panic!("poll failed")
            }
        }
        let h = spawn_agent(Boom, AgentSpec::new("boom", parked(), &stop)).unwrap();
        let e = h.join().unwrap_err();
        assert_eq!(e.to_string(), "thread boom panicked: poll failed");
    }

    #[test]
    fn a_missing_core_still_runs_the_thread() {
        let h = spawn_thread("unpinnable", Some(usize::MAX), || 5).unwrap();
        assert_eq!(h.join().unwrap(), 5);
    }

    #[test]
    fn the_engine_runs_as_an_agent_and_stops() {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = crate::Engine::new(&crate::EngineConfig::default(), 1, Vec::new(), Vec::new());
        let stats = engine.handles().stats;
        let h = spawn_agent(engine, AgentSpec::new("engine-test", parked(), &stop)).unwrap();
        // Housekeeping runs on idle polls too: the heartbeat moves.
        wait_until("the engine heartbeat", || stats.heartbeat_ns.get() > 0);
        h.stop_and_join().unwrap();
    }

    /// A paced agent (work every 10 ms) that says how long until its next step is
    /// polled a few times a step, not through the strategy's doubling series of short
    /// sleeps, which starts over after every step (~17 polls a step from 1 us); with
    /// a busy-spin strategy it still spins. (Load only makes sleeps longer, so the
    /// upper bound cannot fail for being slow.)
    #[test]
    fn a_paced_agent_sleeps_until_its_next_step() {
        struct Paced {
            polls: Arc<AtomicUsize>,
            due: Instant,
        }
        const EVERY: Duration = Duration::from_millis(10);
        impl Agent for Paced {
            fn name(&self) -> &str {
                "paced"
            }
            fn poll(&mut self) -> usize {
                self.polls.fetch_add(1, Ordering::Relaxed);
                if Instant::now() < self.due {
                    return 0;
                }
                self.due += EVERY;
                1
            }
            fn idle_for(&self) -> Option<Duration> {
                Some(self.due.saturating_duration_since(Instant::now()))
            }
        }
        let polls_in = |idle: IdleConfig| {
            let stop = Arc::new(AtomicBool::new(false));
            let polls = Arc::new(AtomicUsize::new(0));
            let agent = Paced {
                polls: Arc::clone(&polls),
                due: Instant::now(),
            };
            let h = spawn_agent(agent, AgentSpec::new("paced", idle, &stop)).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            h.stop_and_join().unwrap();
            polls.load(Ordering::Relaxed)
        };
        let config = IdleConfig {
            park_micros: 1,
            max_park_micros: 20_000,
            ..parked()
        };
        // 21 steps in 200 ms, about two polls each.
        let n = polls_in(config);
        assert!(n <= 21 * 3, "{n} polls in 200 ms for 21 steps");
        let spin = IdleConfig {
            strategy: IdleKind::BusySpin,
            ..parked()
        };
        assert!(polls_in(spin) > 10_000, "busy-spin keeps spinning");
    }

    /// Awaited sleeps of an hour: an agent woken by its producers takes every item as
    /// it comes, because they ring its doorbell after each push, and the run loop arms
    /// it and polls once more before each sleep (a wake-up lost to a push that races
    /// the arming would hang this test until its deadline), and stopping it wakes it.
    #[test]
    fn an_agent_with_a_doorbell_sleeps_long_and_wakes_for_each_item() {
        struct Counting {
            sent: Arc<AtomicUsize>,
            seen: Arc<AtomicUsize>,
        }
        impl Agent for Counting {
            fn name(&self) -> &str {
                "counting"
            }
            fn poll(&mut self) -> usize {
                let sent = self.sent.load(Ordering::Acquire);
                let seen = self.seen.load(Ordering::Relaxed);
                if sent > seen {
                    self.seen.store(sent, Ordering::Release);
                }
                sent - seen
            }
        }
        const HOUR: u32 = 3_600_000_000;
        let idle = IdleConfig {
            park_micros: 50,
            max_park_micros: HOUR,
            ..parked()
        };
        let (sent, seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let agent = Counting {
            sent: Arc::clone(&sent),
            seen: Arc::clone(&seen),
        };
        let bell = crate::doorbell::Doorbell::new();
        let stop = Arc::new(AtomicBool::new(false));
        let h = spawn_agent(agent, AgentSpec::new("woken", idle, &stop).woken_by(&bell)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 1..=20_000 {
            sent.store(i, Ordering::Release);
            bell.ring();
            // Wait (spinning, so the next push races the agent's way back to sleep)
            // for all but every third item.
            while i % 3 != 0 && seen.load(Ordering::Acquire) < i {
                assert!(Instant::now() < deadline, "the agent slept through item {i}");
                std::hint::spin_loop();
            }
        }
        wait_until("the last item", || seen.load(Ordering::Acquire) == 20_000);
        assert!(bell.wakes() > 0, "the agent never slept");
        wait_until("the agent to sleep", || bell.is_armed());
        h.stop_and_join().unwrap();
    }
}
