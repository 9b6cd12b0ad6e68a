//! `bench market`'s engine: the cost of routing policies on one job trace and one provider
//! market, on a simulated clock, driving the production [`router::Router`].
//!
//! - [`scenario`]: the scenario file's shape and the resolved [`MarketScenario`] (catalog as the
//!   workers see it, each provider's true limits, latency, outages and 429 windows, the trace).
//! - [`server`]: simulated providers that enforce their true limits.
//! - [`engine`]: the discrete-event simulation and the policies — `dearest`, `gateway`,
//!   `diy-batch` and `offpeak` (the production [`router::Router`]).
//! - `batch`: provider batches in the simulation: the fleet's gathering and each batch's fate.
//! - [`bound`]: a lower bound on any policy's cost for the trace and market.
//! - [`random`]: random markets and traces built from a catalog, for scenarios nobody tuned for.

mod batch;
pub mod bound;
pub mod engine;
pub mod random;
pub mod scenario;
pub mod server;

pub use bound::{lower_bound, BoundOptions, LowerBound};
pub use engine::{
    run, BatchTally, PlannerConfig, PolicyKind, ProviderTally, RouteTally, RunReport,
};
pub use random::random_spec;
pub use scenario::{MarketScenario, ScenarioError, ScenarioSpec, TraceEntry, TraceJob};
