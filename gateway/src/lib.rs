//! namegate: a signal admission gateway for Kubernetes where the RemediationRequest name is the lock.
//!
//! A request flows `http` → `adapters` (decode, validate, fingerprint) → `pipeline`, which runs
//! `admission` (consult the `index`, create `name(fp, k+1)` or count a duplicate) and, once the
//! answer is certain, `occurrence` (coalesced status writes) and `audit` (the tamper-evident trail). See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod admission;
pub mod apiserver;
pub mod audit;
pub mod auth;
pub mod config;
pub mod create;
pub mod http;
pub mod index;
pub mod occurrence;
pub mod pipeline;
pub mod resolve;
pub mod serve;
pub mod signal;
pub mod telemetry;
