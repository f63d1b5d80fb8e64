//! `offer_tools` (test kind): a sink that offers the named agents' tools to the stage feeding
//! it and answers nothing, so a test can play the agent itself on the control lane.

use serde::Deserialize;

use crate::engine::format::{Caps, Format};
use crate::engine::frame::Frame;
use crate::engine::registry::{
    CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind,
};
use crate::engine::stage::ToolSpec;
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};
use crate::vocab::AgentName;

/// Parameters of `offer_tools`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferToolsSpec {
    /// The agents whose tools are offered.
    pub agents: Vec<String>,
}

/// Offers tools, discards tool calls.
pub struct OfferTools;

impl StageKind for OfferTools {
    const NAME: &'static str = "offer_tools";
    const SUMMARY: &'static str = "Test sink: offers agents' tools upstream, answers nothing.";
    const EXAMPLE: &'static str = "agents = [\"order_status\"]";
    const ROLE: Role = Role::Sink;
    type Spec = OfferToolsSpec;

    fn input_caps(_: &OfferToolsSpec) -> Caps {
        Caps::Events
    }

    fn validate(spec: &OfferToolsSpec) -> Vec<Invalid> {
        spec.agents
            .iter()
            .filter(|a| AgentName::from_name(a).is_none())
            .map(|a| Invalid {
                key: "agents",
                message: format!("`{a}` is not an agent"),
            })
            .collect()
    }

    fn tools(spec: &OfferToolsSpec) -> Vec<ToolSpec> {
        spec.agents
            .iter()
            .filter_map(|a| AgentName::from_name(a))
            .map(|a| crate::commerce::catalog::entry(a).tool())
            .collect()
    }

    fn negotiate(
        _: &OfferToolsSpec,
        _: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::none())
    }

    fn build(_: &OfferToolsSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Inline(Box::new(OfferTools)))
    }
}

impl Stage for OfferTools {
    fn process(&mut self, _: Frame<'_>, _: &mut Output<'_>) -> Result<(), StageError> {
        Ok(())
    }
}
