//! The words every layer shares, defined once: what a caller can mean ([`Intent`]) and the
//! facts an utterance carries ([`Entities`]), the store actions ([`AgentName`]) and how they end
//! ([`ActionStatus`]), and phone numbers (parsed to E.164, normalised for storage, masked for
//! speech and logs). It imports nothing from the crate.

use serde::{Deserialize, Serialize};

// ---- Intents and entities -------------------------------------------------------------------

/// The twelve labels (`intents/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Intent {
    /// Where is my order.
    OrderStatus,
    /// Cancel an order.
    CancelOrder,
    /// Return, exchange, replacement.
    ReturnRequest,
    /// Where is my refund.
    RefundStatus,
    /// Change or correct the address.
    AddressChange,
    /// Deliver on another day or time.
    RescheduleDelivery,
    /// A person, please.
    TalkToHuman,
    /// Yes.
    Affirm,
    /// No.
    Deny,
    /// Hello.
    Greeting,
    /// Bye.
    Goodbye,
    /// Anything else.
    Unknown,
}

/// Every intent, in `Intent as usize` order.
pub const INTENTS: [Intent; 12] = [
    Intent::OrderStatus,
    Intent::CancelOrder,
    Intent::ReturnRequest,
    Intent::RefundStatus,
    Intent::AddressChange,
    Intent::RescheduleDelivery,
    Intent::TalkToHuman,
    Intent::Affirm,
    Intent::Deny,
    Intent::Greeting,
    Intent::Goodbye,
    Intent::Unknown,
];

impl Intent {
    /// The label.
    pub fn name(self) -> &'static str {
        match self {
            Intent::OrderStatus => "order_status",
            Intent::CancelOrder => "cancel_order",
            Intent::ReturnRequest => "return_request",
            Intent::RefundStatus => "refund_status",
            Intent::AddressChange => "address_change",
            Intent::RescheduleDelivery => "reschedule_delivery",
            Intent::TalkToHuman => "talk_to_human",
            Intent::Affirm => "affirm",
            Intent::Deny => "deny",
            Intent::Greeting => "greeting",
            Intent::Goodbye => "goodbye",
            Intent::Unknown => "unknown",
        }
    }

    /// The intent with this label.
    pub fn from_name(name: &str) -> Option<Intent> {
        INTENTS.into_iter().find(|i| i.name() == name)
    }

    /// A request about the store (not a dialogue act such as yes, no, hello, bye).
    pub fn is_request(self) -> bool {
        (self as usize) <= Intent::TalkToHuman as usize
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A runner-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// The label.
    pub intent: Intent,
    /// Its probability.
    pub confidence: f32,
}

/// The entities of one utterance (the first of each type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entities {
    /// Order number, digits only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// 10-digit Indian mobile number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// 6-digit pincode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pincode: Option<String>,
    /// Rupees, integer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

impl Entities {
    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.order_id.is_none()
            && self.phone.is_none()
            && self.pincode.is_none()
            && self.amount.is_none()
    }
}

// ---- Agents and their outcomes --------------------------------------------------------------

/// The agents, one per store action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentName {
    /// Where an order is.
    OrderStatus,
    /// Cancel an order.
    CancelOrder,
    /// Return or replace.
    ReturnRequest,
    /// Where a refund is.
    RefundStatus,
    /// Change the delivery address.
    AddressChange,
    /// Deliver another day.
    RescheduleDelivery,
    /// Hand over to a person.
    TalkToHuman,
}

/// Every agent.
pub const AGENTS: [AgentName; 7] = [
    AgentName::OrderStatus,
    AgentName::CancelOrder,
    AgentName::ReturnRequest,
    AgentName::RefundStatus,
    AgentName::AddressChange,
    AgentName::RescheduleDelivery,
    AgentName::TalkToHuman,
];

impl AgentName {
    /// Its name (also the Realtime tool's name).
    pub fn name(self) -> &'static str {
        match self {
            AgentName::OrderStatus => "order_status",
            AgentName::CancelOrder => "cancel_order",
            AgentName::ReturnRequest => "return_request",
            AgentName::RefundStatus => "refund_status",
            AgentName::AddressChange => "address_change",
            AgentName::RescheduleDelivery => "reschedule_delivery",
            AgentName::TalkToHuman => "talk_to_human",
        }
    }

    /// The agent with this name.
    pub fn from_name(name: &str) -> Option<AgentName> {
        AGENTS.into_iter().find(|a| a.name() == name)
    }

    /// The agent serving an intent.
    pub fn for_intent(intent: Intent) -> Option<AgentName> {
        Some(match intent {
            Intent::OrderStatus => AgentName::OrderStatus,
            Intent::CancelOrder => AgentName::CancelOrder,
            Intent::ReturnRequest => AgentName::ReturnRequest,
            Intent::RefundStatus => AgentName::RefundStatus,
            Intent::AddressChange => AgentName::AddressChange,
            Intent::RescheduleDelivery => AgentName::RescheduleDelivery,
            Intent::TalkToHuman => AgentName::TalkToHuman,
            _ => return None,
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Answered or acted.
    Done,
    /// Waiting for the caller's yes; the message says what to ask.
    NeedsConfirmation,
    /// Something is missing (the order number); the message says what to ask.
    NeedsInfo,
    /// Not possible for this order (already shipped, not delivered yet, …).
    Refused,
    /// The caller said no.
    Declined,
    /// The store could not be reached or refused.
    Failed,
    /// No store is configured.
    NotConfigured,
    /// The store may or may not have made the change and a look did not settle it; a person
    /// checks (the ledger keeps the claim, so nothing repeats it meanwhile).
    Uncertain,
    /// A ledger row whose change is being made now (never a tool's answer).
    Pending,
}

/// Every action status.
pub const ACTION_STATUSES: [ActionStatus; 9] = [
    ActionStatus::Done,
    ActionStatus::NeedsConfirmation,
    ActionStatus::NeedsInfo,
    ActionStatus::Refused,
    ActionStatus::Declined,
    ActionStatus::Failed,
    ActionStatus::NotConfigured,
    ActionStatus::Uncertain,
    ActionStatus::Pending,
];

impl ActionStatus {
    /// Its label.
    pub fn name(self) -> &'static str {
        match self {
            ActionStatus::Done => "done",
            ActionStatus::NeedsConfirmation => "needs_confirmation",
            ActionStatus::NeedsInfo => "needs_info",
            ActionStatus::Refused => "refused",
            ActionStatus::Declined => "declined",
            ActionStatus::Failed => "failed",
            ActionStatus::NotConfigured => "not_configured",
            ActionStatus::Uncertain => "uncertain",
            ActionStatus::Pending => "pending",
        }
    }

    /// The status labelled `name`.
    pub fn from_name(name: &str) -> Option<ActionStatus> {
        ACTION_STATUSES.into_iter().find(|s| s.name() == name)
    }
}

// ---- Phone numbers --------------------------------------------------------------------------

/// An Indian phone number in E.164 (`+91` and ten digits), from what a caller or Exotel gives.
pub fn e164(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let ten = match digits.len() {
        10 => digits.as_str(),
        11 if digits.starts_with('0') => &digits[1..],
        12 if digits.starts_with("91") => &digits[2..],
        _ => return None,
    };
    ten.starts_with(['6', '7', '8', '9'])
        .then(|| format!("+91{ten}"))
}

/// A phone number as stored and filtered: E.164 for Indian mobiles, digits (and a leading `+`)
/// otherwise, so `09876543210`, `+91 98765 43210` and `919876543210` are one number.
pub fn normalize_number(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if let Some(e164) = e164(raw) {
        return Some(e164);
    }
    let plus = raw.starts_with('+');
    let digits: String = raw.chars().filter(char::is_ascii_digit).take(20).collect();
    if digits.is_empty() {
        return None;
    }
    Some(if plus { format!("+{digits}") } else { digits })
}

/// The first `bytes` bytes (at most 32) of the SHA-256 of `text`, as lower-case hex.
pub fn sha256_hex(text: &str, bytes: usize) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `…3210`: the last four digits, for speaking and logging.
pub fn masked_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let tail = &digits[digits.len().saturating_sub(4)..];
    format!("…{tail}")
}

/// Masks every phone number in `text` but its last four digits.
pub fn mask_phones(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // A number starts a token: not inside a word, nor after `x-` / `x.` (the tail of a
        // UUID or a version).
        let joined = i >= 2 && matches!(chars[i - 1], '-' | '.') && is_word(chars[i - 2]);
        let starts = (chars[i] == '+' || chars[i].is_ascii_digit())
            && (i == 0 || !is_word(chars[i - 1]))
            && !joined;
        if !starts {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits and separators, ending on a digit.
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        if chars[j] == '+' {
            j += 1;
        }
        while j < chars.len() {
            let c = chars[j];
            if c.is_ascii_digit() {
                digits += 1;
                end = j + 1;
            } else if !matches!(c, ' ' | '-' | '(' | ')') {
                break;
            }
            j += 1;
        }
        let bounded = end >= chars.len() || !is_word(chars[end]);
        // A bare JSON number (`"bytes":1234567890,`) is a count, not a phone number (those are
        // strings), and masking it would break the line.
        let json_number =
            i > 0 && chars[i - 1] == ':' && chars.get(end).is_some_and(|c| matches!(c, ',' | '}'));
        if (10..=15).contains(&digits) && bounded && end > i && !json_number {
            let mut seen = 0;
            for &c in &chars[i..end] {
                if c.is_ascii_digit() {
                    seen += 1;
                    out.push(if seen > digits - 4 { c } else { '*' });
                } else {
                    out.push(c);
                }
            }
            i = end;
        } else {
            // Not a phone number: copy through the first character and go on.
            out.push(chars[i]);
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_become_e164_and_are_masked() {
        assert_eq!(e164("+91 98765 43210").as_deref(), Some("+919876543210"));
        assert_eq!(e164("09876543210").as_deref(), Some("+919876543210"));
        assert_eq!(e164("9876543210").as_deref(), Some("+919876543210"));
        assert_eq!(e164("12345"), None);
        assert_eq!(e164("5876543210"), None, "Indian mobiles start with 6-9");
        assert_eq!(masked_phone("+919876543210"), "…3210");
    }

    #[test]
    fn numbers_are_normalized_to_one_spelling() {
        for raw in [
            "09876543210",
            "+91 98765 43210",
            "919876543210",
            "9876543210",
        ] {
            assert_eq!(normalize_number(raw).as_deref(), Some("+919876543210"));
        }
        // A Bengaluru landline (080) is +91 80… too.
        assert_eq!(
            normalize_number("080-4123-4567").as_deref(),
            Some("+918041234567")
        );
        assert_eq!(
            normalize_number("+1 (415) 555-0100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(normalize_number("1800-123").as_deref(), Some("1800123"));
        assert_eq!(normalize_number("  "), None);
        assert_eq!(normalize_number("abc"), None);
    }
}
