//! The node channel's protocol: the `.proto` files under `proto/` and the prost/tonic types
//! generated from them at build time, with the codec they use ([`codec`]). Nothing else lives
//! here. The `server` feature brings the panel side, `client` the Wings side.
#![forbid(unsafe_code)]

pub mod codec;

/// `mamba.node.v1`: the one long-lived stream between Wings and the panel.
pub mod node {
    /// Version 1 of the node channel.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("mamba.node.v1");
    }
}
