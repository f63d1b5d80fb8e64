//! Telephony providers. A transport turns a provider's messages into what the call controller
//! understands, and the controller's decisions back into the provider's messages.

pub mod exotel;
