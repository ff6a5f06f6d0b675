//! The end-to-end fault matrix (issue #10): every fault the emulator can
//! inject, and a client hanging up, × `stream` true and false × first turn
//! and continuation.
//!
//! Each cell runs its own emulator and tether. For the first-turn position
//! the fault is queued before turn 1; for the continuation position one clean
//! turn runs first and the fault is queued before turn 2. Every cell checks:
//! - the faulted call ends within [`DEADLINE`] with the outcome the recovery
//!   table (docs/ARCHITECTURE.md §2, `src/proxy/turn.rs`) designs for that
//!   fault: a correct answer, or a clean error in the API's shape;
//! - the recoveries tether counted are exactly the designed ones, the
//!   emulator consumed the fault, and the number of upstream connections
//!   shows whether the socket was kept or replaced;
//! - the conversation's next turns work (fresh or continue as designed, then
//!   continue), and the oracle finds no context that differs from what the
//!   client sent, for every response the emulator created;
//! - once the client is done, tether's gauges show no leak: nothing in
//!   flight, no client connection but the scrape's own, one upstream socket
//!   and one session for the one live conversation, and the runtime's tasks
//!   back to the baseline taken before the cell plus that socket's task;
//! - after a graceful shutdown, not one task of tether is left.
//!
//! tether and the test's client run on a runtime of their own per cell, the
//! emulators on a shared one, so `tether_runtime_tasks_alive` counts tether's
//! tasks (and the scrape's) and nothing of the emulator's.

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether::emulator::{EmulatorConfig, EmulatorHandle};

/// Every client call of a cell must end within this.
const DEADLINE: Duration = Duration::from_secs(10);
/// Gauges must reach their resting values within this once the client is done.
const SETTLE: Duration = Duration::from_secs(2);
/// `upstream.fallback_cooldown` in every cell (only refusals start one).
const COOLDOWN: Duration = Duration::from_secs(1);
/// `slow=MS` for the slow-upstream cells.
const SLOW_MS: u64 = 25;
/// Cells run at once (each on its own thread and runtime).
const PARALLEL: usize = 6;

/// A check's result: `Err` says what differed from the design.
type Check<T = ()> = Result<T, String>;

/// `Err(format!(…))` unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

mod client;
mod gauges;
mod table;

use client::{
    Sent, absorb, check_answer, check_error, check_oracle, check_sse_error, check_sse_failed, hang_up,
    ok_turn, send,
};
use common::Conversation;
use gauges::{Rest, drained, scrape, settle};
use table::{Cell, Expect, KINDS, Kind, Outcome, Position, Then};

/// What one cell found, for the summary.
#[derive(Debug, Default)]
struct Report {
    turns: usize,
    faulted_took: Duration,
    baseline_tasks: i64,
    tasks_after_shutdown: usize,
}

/// One cell: its own emulator (on the shared runtime) and tether.
async fn run_cell(cell: Cell, emulators: tokio::runtime::Handle) -> Check<Report> {
    let expect = cell.expect();
    let (addr, emu) = emulators
        .spawn(tether::emulator::spawn(EmulatorConfig::default()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let result = drive(cell, &expect, addr, &emu).await;
    emu.shutdown();
    result
}

/// The cell's turns and checks, from tether's start to its shutdown.
async fn drive(
    cell: Cell,
    expect: &Expect,
    addr: std::net::SocketAddr,
    emu: &EmulatorHandle,
) -> Check<Report> {
    let mut config = common::config_for(&format!("http://{addr}/v1"));
    config.upstream.fallback_cooldown = COOLDOWN;
    if cell.fault == Kind::PingTimeout {
        config.pool.ping_interval = Duration::from_millis(100);
        config.pool.pong_timeout = Duration::from_millis(1000);
    }
    let mut t = common::start(config).await;
    let metrics = format!("http://{}/metrics", t.addr);
    let mut report = Report::default();

    // Baseline: tether idle, its only client the scrape itself.
    scrape(&metrics).await?;
    let baseline = settle(&metrics, &Rest { sockets: 0, sessions: 0, tasks: None }).await?;
    report.baseline_tasks = baseline.tasks.unwrap_or_default();

    let mut c = Conversation::new(&t.base(), "sk-fault", cell.stream);
    let mut sent = Sent::default();
    if cell.position == Position::Continuation {
        ok_turn(&mut c, &mut sent, "fresh").await.map_err(|e| format!("clean turn 1: {e}"))?;
    }
    let faults = cell.fault.faults(cell.position);
    for f in &faults {
        emu.inject(f.parse().map_err(|e| format!("{f}: {e}"))?);
    }

    // The faulted turn.
    if let Outcome::HungUp = expect.outcome {
        hang_up(&c, &mut sent, emu).await.map_err(|e| format!("faulted turn: {e}"))?;
        drained(&metrics).await?;
    } else {
        faulted_turn(cell, expect, &mut c, &mut sent, &mut report)
            .await
            .map_err(|e| format!("faulted turn: {e}"))?;
    }
    let s = scrape(&metrics).await?;

    let want: BTreeSet<String> = expect.recoveries.iter().map(|r| r.to_string()).collect();
    ensure!(s.recoveries == want, "recoveries {:?}, want {want:?}", s.recoveries);

    // The conversation goes on.
    for (n, step) in expect.then.iter().enumerate() {
        match step {
            Then::Turn(route) => ok_turn(&mut c, &mut sent, route)
                .await
                .map_err(|e| format!("turn {} after the fault: {e}", n + 1))?,
            Then::Cooldown => tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await,
        }
    }
    report.turns = sent.inputs.len();

    check_oracle(emu, &sent)?;
    let stats = emu.stats();
    ensure!(
        stats.faults_applied == faults.len() as u64,
        "the emulator applied {} of {} faults",
        stats.faults_applied,
        faults.len()
    );
    let sockets_used = if expect.new_socket { 2 } else { 1 };
    ensure!(
        stats.ws_connections == sockets_used,
        "{} upstream connections, want {sockets_used}",
        stats.ws_connections
    );

    // No leaks: one conversation is live, on one socket (one task).
    let tasks = report.baseline_tasks + 1 + expect.http_pool_tasks();
    let want = Rest { sockets: 1, sessions: 1, tasks: Some(tasks) };
    settle(&metrics, &want).await.map_err(|e| format!("after the cell: {e}"))?;

    // Graceful shutdown leaves no task of tether behind.
    t.stop();
    tokio::time::timeout(DEADLINE, &mut t.done)
        .await
        .map_err(|_| "tether did not shut down within the deadline".to_string())?
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Handle::current();
    let until = Instant::now() + SETTLE;
    while rt.metrics().num_alive_tasks() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.tasks_after_shutdown = rt.metrics().num_alive_tasks();
    ensure!(report.tasks_after_shutdown == 0, "{} tasks alive after shutdown", report.tasks_after_shutdown);
    Ok(report)
}

/// Sends the faulted turn and checks the client's answer against the design.
async fn faulted_turn(
    cell: Cell,
    expect: &Expect,
    c: &mut Conversation,
    sent: &mut Sent,
    report: &mut Report,
) -> Check {
    let input = c.input.clone();
    let reply = send(c, sent).await?;
    report.faulted_took = reply.took;
    match expect.outcome {
        Outcome::Answer { route } => {
            let response = check_answer(&reply, cell.stream, route)?;
            sent.ok.push((response["id"].as_str().unwrap_or_default().to_string(), input));
            absorb(c, &response);
        }
        Outcome::SseError { route, code } => check_sse_error(&reply, route, code)?,
        Outcome::SseFailed { route } => check_sse_failed(&reply, route)?,
        Outcome::Error { status, kind, code, route } => check_error(&reply, status, kind, code, route)?,
        Outcome::HungUp => return Err("not a turn the client waits for".into()),
    }
    if cell.fault == Kind::Slow {
        // Every response has at least five events, each delayed.
        let least = Duration::from_millis(5 * SLOW_MS);
        ensure!(reply.took >= least, "slow upstream answered in {:?}, under {least:?}", reply.took);
    }
    Ok(())
}

/// Every fault × stream/JSON × first turn/continuation.
fn cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for fault in KINDS {
        for stream in [false, true] {
            for position in [Position::First, Position::Continuation] {
                cells.push(Cell { fault, stream, position });
            }
        }
    }
    cells
}

#[test]
fn fault_matrix() {
    let started = Instant::now();
    let emulators = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("emulators")
        .enable_all()
        .build()
        .expect("emulator runtime");
    let queue = Arc::new(Mutex::new(cells().into_iter().collect::<VecDeque<_>>()));
    let total = queue.lock().expect("queue").len();
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (queue, results, handle) = (queue.clone(), results.clone(), emulators.handle().clone());
            std::thread::spawn(move || {
                loop {
                    // Not in the `while let` scrutinee: its guard would live through the cell.
                    let next = queue.lock().expect("queue").pop_front();
                    let Some(cell) = next else { break };
                    let handle = handle.clone();
                    // A thread named after the cell, so a panic names it too.
                    let outcome = std::thread::Builder::new()
                        .name(cell.name())
                        .spawn(move || {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .expect("cell runtime");
                            rt.block_on(run_cell(cell, handle))
                        })
                        .expect("spawn cell")
                        .join()
                        .unwrap_or_else(|_| Err("panicked".into()));
                    results.lock().expect("results").push((cell.name(), outcome));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut results = std::mem::take(&mut *results.lock().expect("results"));
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let failures: Vec<String> =
        results.iter().filter_map(|(name, r)| r.as_ref().err().map(|e| format!("  {name}: {e}"))).collect();
    let turns: usize = results.iter().filter_map(|(_, r)| r.as_ref().ok()).map(|r| r.turns).sum();
    let slowest =
        results.iter().filter_map(|(name, r)| r.as_ref().ok().map(|r| (r.faulted_took, name))).max();
    eprintln!(
        "fault matrix: {} cells, {} passed, {turns} client turns, slowest faulted turn {slowest:?}, {:?} in all",
        total,
        total - failures.len(),
        started.elapsed()
    );
    assert!(results.len() == total, "{} of {total} cells reported", results.len());
    assert!(failures.is_empty(), "{} of {total} cells failed:\n{}", failures.len(), failures.join("\n"));
}
