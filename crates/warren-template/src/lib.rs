//! Warren templates: recipes that produce a ready snapshot.
//!
//! A template names a base (the Debian base image or another template), build steps, a start
//! command with a ready check, and default sandbox resources. Map of the crate:
//!
//! - [`model`]: the definition as Rust types; [`mod@file`] reads it from TOML (errors carry line
//!   and column); [`e2b`] maps E2B's Template-builder requests onto it and holds the serde
//!   types of those endpoints.
//! - [`resolve`]: finds what a build starts from (image or a base template's build), refusing
//!   cycles of bases.
//! - [`layers`]: content keys of the disk layers, including the hash of copied files;
//!   [`plan`] keys every step and finds the cached ones.
//! - [`builder`]: runs a build over the [`backend`] traits (the VM runtime implements them),
//!   reusing cached layers ([`run`] executes the uncached steps, [`commands`] spells package
//!   steps as shell), collecting [`logs`], and ending with the ready snapshot.
//! - [`rules`]: validation shared by the file format and the E2B mapping.
//! - [`registry`]: serializable records of templates and builds and pure functions over them;
//!   storing them is the control plane's job.

pub mod backend;
pub mod builder;
pub mod commands;
pub mod e2b;
pub mod file;
pub mod layers;
pub mod logs;
pub mod model;
pub mod plan;
pub mod registry;
pub mod resolve;
pub mod rules;
pub mod run;
