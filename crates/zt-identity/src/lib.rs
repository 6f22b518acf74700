//! Identity resolution for zhongtai.
//!
//! [`graph`] holds the identity graph: every identifier an event carries (CRM customer id,
//! user id, device id, phone and e-mail hashes, and the order, waybill and ticket ids that
//! tie a shipment or a ticket to a customer) is a node; an event links all of its
//! identifiers, and linked identifiers form one person. The graph is a union-find with
//! guards, and gives each person a deterministic id. The stream processor around it
//! (`zt process identity`: state in changelog topics, offsets applied, output to
//! `zt.identity.links`, `zt.identity.merges` and `zt.events.resolved`) is built on this
//! module.

pub mod graph;

pub use graph::{GraphConfig, IdKind, Identifier, IdentityGraph, Merge, Refusal, Resolution};
