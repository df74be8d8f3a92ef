//! warren-api
