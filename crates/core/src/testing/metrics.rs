use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{Error, MetricSource, Result, Scope};

/// A metric whose value the test sets. Share it with `Arc` to change it while an engine runs.
///
/// ```
/// use fleetscale_core::testing::StaticMetric;
/// use fleetscale_core::{MetricSource, Scope};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let m = StaticMetric::new("queue_depth", 3.0);
/// m.set(7.0);
/// assert_eq!(m.collect(&Scope::new("app")).await.unwrap(), 7.0);
/// m.fail("broker down");
/// assert!(m.collect(&Scope::new("app")).await.is_err());
/// m.hang();
/// let app = Scope::new("app");
/// let read = tokio::time::timeout(std::time::Duration::from_millis(10), m.collect(&app));
/// assert!(read.await.is_err(), "a hung read never answers");
/// # });
/// ```
#[derive(Debug)]
pub struct StaticMetric {
    name: String,
    value: Mutex<std::result::Result<f64, String>>,
    /// Whether reads never answer ([`StaticMetric::hang`]).
    hanging: AtomicBool,
    reads: Mutex<u64>,
}

impl StaticMetric {
    /// A metric named `name` reading `value`.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        StaticMetric {
            name: name.into(),
            value: Mutex::new(Ok(value)),
            hanging: AtomicBool::new(false),
            reads: Mutex::new(0),
        }
    }

    /// Makes every read from now on return `value` (ending a [`StaticMetric::fail`] or
    /// [`StaticMetric::hang`]).
    pub fn set(&self, value: f64) {
        self.hanging.store(false, Ordering::SeqCst);
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Ok(value);
    }

    /// Makes every read fail with `message` until the next [`StaticMetric::set`].
    pub fn fail(&self, message: impl Into<String>) {
        self.hanging.store(false, Ordering::SeqCst);
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Err(message.into());
    }

    /// Makes every read from now on never answer (a hung metric server) until the next
    /// [`StaticMetric::set`] or [`StaticMetric::fail`]; such reads are counted.
    pub fn hang(&self) {
        self.hanging.store(true, Ordering::SeqCst);
    }

    /// How many reads happened.
    pub fn reads(&self) -> u64 {
        *self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl MetricSource for StaticMetric {
    fn name(&self) -> &str {
        &self.name
    }

    async fn collect(&self, _scope: &Scope) -> Result<f64> {
        *self.reads.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if self.hanging.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map_err(|m| Error::metric(&self.name, m))
    }
}

/// A metric that plays a script of readings, one per read, repeating the last one forever.
///
/// `None` in the script is a failed read.
#[derive(Debug)]
pub struct ScriptedMetric {
    name: String,
    script: Mutex<VecDeque<Option<f64>>>,
}

impl ScriptedMetric {
    /// A metric named `name` that reads `script` in order.
    pub fn new(name: impl Into<String>, script: impl IntoIterator<Item = Option<f64>>) -> Self {
        ScriptedMetric {
            name: name.into(),
            script: Mutex::new(script.into_iter().collect()),
        }
    }
}

#[async_trait]
impl MetricSource for ScriptedMetric {
    fn name(&self) -> &str {
        &self.name
    }

    async fn collect(&self, _scope: &Scope) -> Result<f64> {
        let mut s = self.script.lock().unwrap_or_else(|e| e.into_inner());
        let next = if s.len() > 1 {
            s.pop_front()
        } else {
            s.front().copied()
        };
        match next {
            Some(Some(v)) => Ok(v),
            Some(None) => Err(Error::metric(&self.name, "scripted failure")),
            None => Err(Error::metric(&self.name, "script is empty")),
        }
    }
}
