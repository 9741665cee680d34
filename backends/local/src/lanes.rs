//! A small fixed pool of threads serving many ordered streams of blocking work ("lanes")
//! (issue 13 §5). An upload used to get a thread of its own for its disk writes and
//! another for its SHA-256: 300 concurrent uploads meant 600 threads taking turns on
//! 2 cores. A lane instead is a bounded queue of items with the state that consumes
//! them (an open file, a hash context); a lane with items waiting is scheduled once on
//! the pool's run queue, and whichever pool thread takes it handles a few of its items
//! in order, then puts it back at the end of the queue if more wait. So:
//! - the items of one lane are handled one at a time and in order (a digest stays
//!   exact, writes land in sequence);
//! - lanes take turns (round robin), none starves;
//! - the sender waits when its lane's queue is full: back-pressure, never unbounded
//!   buffering.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use tokio::sync::mpsc;

/// Items of one lane handled per turn before it goes to the back of the run queue.
const TURN: usize = 2;

/// What a lane does with its items.
pub trait Worker: Send + 'static {
    /// The items of the lane.
    type Item: Send + 'static;
    /// Handles the next item, in order. `false` stops the lane: the items still queued
    /// are dropped, and the sender's next [`LaneSender::send`] fails.
    fn handle(&mut self, item: Self::Item) -> bool;
    /// Called once, after the last item: every sender was dropped, or `handle` said
    /// stop.
    fn finish(self);
}

/// A pool of threads serving lanes.
pub struct Pool {
    name: &'static str,
    /// Threads per CPU core (at least one thread in all).
    per_core: usize,
    queue: Mutex<VecDeque<Arc<dyn Runnable>>>,
    ready: Condvar,
    /// The number of threads, once started.
    started: OnceLock<usize>,
    /// Lanes open now (for [`Pool::queue_depth`]).
    open: AtomicUsize,
}

trait Runnable: Send + Sync {
    /// Handles a turn's items; `true` if the lane should be scheduled again.
    fn run(&self) -> bool;
}

impl Pool {
    /// A pool of `per_core` threads per CPU core (at least one) named `name`, started
    /// on first use.
    pub const fn new(name: &'static str, per_core: usize) -> Self {
        Self {
            name,
            per_core,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            started: OnceLock::new(),
            open: AtomicUsize::new(0),
        }
    }

    /// Opens a lane for `worker`, with a queue of `depth` items (at least one).
    pub fn lane<W: Worker>(&'static self, worker: W, depth: usize) -> LaneSender<W::Item> {
        self.start();
        let (tx, rx) = mpsc::channel(depth.max(1));
        self.open.fetch_add(1, Ordering::Relaxed);
        let lane = Arc::new(Lane {
            pool: self,
            scheduled: AtomicBool::new(false),
            inner: Mutex::new(LaneInner {
                rx,
                worker: Some(worker),
            }),
        });
        LaneSender { tx: Some(tx), lane }
    }

    /// A queue depth for a new lane: `max` while few lanes are open, fewer as more
    /// are (each queued item is memory held, and a busy pool drains no faster for a
    /// deeper queue), never below one.
    pub fn queue_depth(&self, max: usize) -> usize {
        let open = self.open.load(Ordering::Relaxed);
        let busy = open / (4 * self.threads().max(1));
        (max >> busy.min(8)).max(1)
    }

    /// The pool's thread count.
    pub fn threads(&self) -> usize {
        self.started
            .get()
            .copied()
            .unwrap_or_else(|| cores() * self.per_core.max(1))
    }

    fn start(&'static self) {
        self.started.get_or_init(|| {
            let mut n = 0;
            for i in 0..cores() * self.per_core.max(1) {
                let spawned = std::thread::Builder::new()
                    .name(format!("{}-{i}", self.name))
                    .spawn(move || self.serve());
                match spawned {
                    Ok(_) => n += 1,
                    Err(e) => {
                        tracing::error!(pool = self.name, error = %e, "cannot start a pool thread");
                    }
                }
            }
            tracing::debug!(pool = self.name, threads = n, "pool started");
            n
        });
    }

    fn schedule(&self, lane: Arc<dyn Runnable>) {
        if self.started.get() == Some(&0) {
            // No thread could be started: run the lane here rather than never.
            while lane.run() {}
            return;
        }
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(lane);
            self.ready.notify_one();
        }
    }

    fn serve(&self) {
        loop {
            let lane = {
                let Ok(mut q) = self.queue.lock() else { return };
                loop {
                    if let Some(lane) = q.pop_front() {
                        break lane;
                    }
                    q = match self.ready.wait(q) {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
            };
            if lane.run() {
                self.schedule(lane);
            }
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

struct Lane<W: Worker> {
    pool: &'static Pool,
    /// Set while the lane is on the run queue or being run.
    scheduled: AtomicBool,
    inner: Mutex<LaneInner<W>>,
}

struct LaneInner<W: Worker> {
    rx: mpsc::Receiver<W::Item>,
    /// `None` once finished.
    worker: Option<W>,
}

impl<W: Worker> Lane<W> {
    /// Puts the lane on the run queue unless it is there already.
    fn wake(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.pool.schedule(Arc::clone(self) as Arc<dyn Runnable>);
        }
    }
}

impl<W: Worker> Runnable for Lane<W> {
    fn run(&self) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        let inner = &mut *inner;
        for _ in 0..TURN {
            let Some(worker) = inner.worker.as_mut() else {
                return false;
            };
            match inner.rx.try_recv() {
                Ok(item) => {
                    if !worker.handle(item) {
                        inner.rx.close();
                        while inner.rx.try_recv().is_ok() {}
                        self.finish(inner);
                        return false;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.finish(inner);
                    return false;
                }
            }
        }
        // Off the queue; a sender that queued meanwhile saw `scheduled` still set,
        // so look again.
        self.scheduled.store(false, Ordering::Release);
        let more = inner.worker.is_some() && (!inner.rx.is_empty() || inner.rx.is_closed());
        more && !self.scheduled.swap(true, Ordering::AcqRel)
    }
}

impl<W: Worker> Lane<W> {
    fn finish(&self, inner: &mut LaneInner<W>) {
        if let Some(w) = inner.worker.take() {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
            w.finish();
        }
    }
}

/// The sending side of a lane; dropping it ends the lane once its queued items are
/// handled ([`Worker::finish`]).
pub struct LaneSender<T: Send + 'static> {
    tx: Option<mpsc::Sender<T>>,
    lane: Arc<dyn Wake<T>>,
}

trait Wake<T>: Send + Sync {
    fn wake_lane(self: Arc<Self>);
}

impl<W: Worker> Wake<W::Item> for Lane<W> {
    fn wake_lane(self: Arc<Self>) {
        self.wake();
    }
}

impl<T: Send + 'static> LaneSender<T> {
    /// Queues `item`, waiting while the lane's queue is full; gives it back if the
    /// lane stopped.
    pub async fn send(&mut self, item: T) -> Result<(), T> {
        let Some(tx) = &self.tx else {
            return Err(item);
        };
        match tx.send(item).await {
            Ok(()) => {
                Arc::clone(&self.lane).wake_lane();
                Ok(())
            }
            Err(mpsc::error::SendError(item)) => Err(item),
        }
    }
}

impl<T: Send + 'static> Drop for LaneSender<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        // The lane sees the channel closed and finishes.
        Arc::clone(&self.lane).wake_lane();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static POOL: Pool = Pool::new("test-lanes", 1);

    struct Collect {
        got: Vec<u32>,
        stop_at: Option<u32>,
        done: Option<tokio::sync::oneshot::Sender<Vec<u32>>>,
    }

    impl Worker for Collect {
        type Item = u32;
        fn handle(&mut self, item: u32) -> bool {
            self.got.push(item);
            self.stop_at != Some(item)
        }
        fn finish(mut self) {
            if let Some(d) = self.done.take() {
                let _ = d.send(std::mem::take(&mut self.got));
            }
        }
    }

    fn open(stop_at: Option<u32>) -> (LaneSender<u32>, tokio::sync::oneshot::Receiver<Vec<u32>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let worker = Collect {
            got: Vec::new(),
            stop_at,
            done: Some(tx),
        };
        (POOL.lane(worker, 2), rx)
    }

    /// Many lanes at once on two threads: each gets every item, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_keep_order_and_finish() {
        let mut tasks = Vec::new();
        for l in 0..40u32 {
            tasks.push(tokio::spawn(async move {
                let (mut tx, done) = open(None);
                for i in 0..500 {
                    assert!(tx.send(l * 1000 + i).await.is_ok());
                }
                drop(tx);
                let got = done.await.unwrap_or_default();
                let want: Vec<u32> = (0..500).map(|i| l * 1000 + i).collect();
                assert_eq!(got, want);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// A worker that stops: the sender's later sends fail, `finish` runs once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_lane_refuses_items() {
        let (mut tx, done) = open(Some(3));
        let mut refused = false;
        for i in 0..1000 {
            if tx.send(i).await.is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
        let got = done.await.unwrap_or_default();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }
}
