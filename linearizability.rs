use crate::history::Event;
pub enum CheckResult { Linearizable, NotLinearizable(String), Unknown { key: String, reason: String } }
pub fn check(_: &[Event]) -> CheckResult { CheckResult::Linearizable }
