//! The compiled pipelines a server runs calls on, one per sample rate a call may ask for.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::graph::Graph;

/// The compiled pipeline for each sample rate calls may ask for.
#[derive(Debug, Default)]
pub struct GraphSet {
    by_rate: HashMap<u32, Arc<Graph>>,
}

impl GraphSet {
    /// Adds the graph compiled for `rate`.
    pub fn insert(&mut self, rate: u32, graph: Arc<Graph>) {
        self.by_rate.insert(rate, graph);
    }

    /// The graph for `rate`, if calls at that rate are accepted.
    pub fn get(&self, rate: u32) -> Option<&Arc<Graph>> {
        self.by_rate.get(&rate)
    }

    /// The rates calls may ask for.
    pub fn rates(&self) -> Vec<u32> {
        let mut r: Vec<u32> = self.by_rate.keys().copied().collect();
        r.sort_unstable();
        r
    }
}
