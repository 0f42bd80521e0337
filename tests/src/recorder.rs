//! An in-process `record` method that remembers every execution, for exactly-once checks.

use std::sync::{Arc, Mutex};

use steward::{Kind, Method, MethodResult, Request};

/// Shared list of `data[0]` of every `record` call, in execution order.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    /// A `record` command method feeding this recorder.
    pub fn method(&self, kind: Kind) -> Method {
        let list = self.0.clone();
        Method::new(kind, move |req: Request| {
            let list = list.clone();
            async move {
                list.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(req.data.first().cloned().unwrap_or_default());
                MethodResult::ok("")
            }
        })
    }

    /// Everything recorded so far.
    pub fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Number of executions so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True if nothing ran.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asserts that `expected` ran exactly once each, in this order, and nothing else ran.
    pub fn assert_exactly_once_in_order(&self, expected: &[String]) {
        let seen = self.seen();
        let mut counts = std::collections::HashMap::new();
        for s in &seen {
            *counts.entry(s.clone()).or_insert(0) += 1;
        }
        let twice: Vec<_> = counts
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(k, _)| k.clone())
            .collect();
        assert!(twice.is_empty(), "executed more than once: {twice:?}");
        let lost: Vec<_> = expected
            .iter()
            .filter(|e| !counts.contains_key(*e))
            .collect();
        assert!(
            lost.is_empty(),
            "never executed ({} of {}): {:?}",
            lost.len(),
            expected.len(),
            &lost[..lost.len().min(10)]
        );
        assert_eq!(seen, expected, "executed out of order");
    }
}

/// Starts the node `builder` describes with a `record` method of `kind`, and its recorder.
pub async fn recording_node(
    builder: steward::NodeBuilder,
    kind: Kind,
) -> (steward::Node, Recorder) {
    let rec = Recorder::default();
    let node = builder
        .method("record", rec.method(kind))
        .start()
        .await
        .expect("start a recording node");
    (node, rec)
}
