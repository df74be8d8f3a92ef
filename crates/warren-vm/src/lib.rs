//! warren-vm
