//! warren-client
