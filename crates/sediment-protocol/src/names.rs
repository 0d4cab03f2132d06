//! Kafka's rules for topic names, shared by every place a name arrives: the Kafka port, the
//! controller's state machine and the path of a partition's directory.

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name as Kafka does: 1 to 249 characters of ASCII letters, digits, `.`, `_`
/// and `-`, and not `.` or `..`. A valid name is also a safe single path component.
///
/// ```
/// use sediment_protocol::names::validate_topic_name;
/// assert!(validate_topic_name("orders.v2_eu-1").is_ok());
/// assert!(validate_topic_name("../../outside").is_err());
/// ```
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name \"{name}\" is illegal"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!("topic name is {} characters long, the limit is {MAX_TOPIC_NAME_LEN}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name \"{name}\" contains illegal character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a b", "a\0b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a.b", "__consumer_offsets", "...", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good:?}");
        }
    }
}
