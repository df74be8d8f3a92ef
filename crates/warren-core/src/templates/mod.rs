//! Templates in the control plane: warren-template's builder run with sandboxes as build
//! VMs ([`backend`]), the commands and records around it ([`service`]) and E2B's file
//! uploads ([`uploads`]). Starting a sandbox from a template is the manager's job
//! (`manager/templates.rs`): it resolves the name to the ready snapshot recorded here.

pub mod backend;
mod build_logs;
mod e2b_flow;
pub mod service;
mod uploads;

pub use service::{TemplateError, TemplateService};
pub use uploads::unpack_archive;
