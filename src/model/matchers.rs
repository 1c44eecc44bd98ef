//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus semantics: regexes
//! are fully anchored, and a label that is absent matches as if its value
//! were the empty string.

use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid regular expression {value:?} for label {name:?}: {message}")]
pub struct MatcherError {
    pub name: String,
    pub value: String,
    pub message: String,
}

impl Matcher {
    pub fn new(op: MatchOp, name: &str, value: &str) -> Result<Matcher, MatcherError> {
        let regex = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(
                Regex::new(&format!("^(?s:{value})$")).map_err(|e| MatcherError {
                    name: name.to_string(),
                    value: value.to_string(),
                    message: e.to_string(),
                })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.to_string(),
            op: MatchOp::Equal,
            value: value.to_string(),
            regex: None,
        }
    }

    /// Whether a label value (empty when the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::RegexMatch => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::RegexNoMatch => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether the matcher accepts a series that lacks the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_semantics() {
        let re = Matcher::new(MatchOp::RegexMatch, "job", "api|web").expect("valid");
        assert!(re.matches("api") && re.matches("web"));
        assert!(!re.matches("api2"), "regexes are anchored");
        let nre = Matcher::new(MatchOp::RegexNoMatch, "job", "a.*").expect("valid");
        assert!(nre.matches("") && !nre.matches("abc"));
        assert!(
            Matcher::new(MatchOp::NotEqual, "x", "")
                .expect("valid")
                .matches("y")
        );
        assert!(Matcher::equal("x", "").matches_empty());
        assert!(Matcher::new(MatchOp::RegexMatch, "x", "(").is_err());
        let dot = Matcher::new(MatchOp::RegexMatch, "x", "a.b").expect("valid");
        assert!(dot.matches("a\nb"), ". matches newlines as in Prometheus");
    }
}
