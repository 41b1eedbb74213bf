pub struct Event;
pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, String> { Ok(text.lines().map(|_| Event).collect()) }
