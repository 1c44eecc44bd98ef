//! `${VAR}` and `${VAR:default}` expansion of a config file's text.

/// A variable that is not set and has no default.
#[derive(Debug, PartialEq)]
pub struct MissingVar {
    pub var: String,
    pub line: usize,
}

/// Replaces every `${NAME}` / `${NAME:default}` with the variable's value
/// (or the default). Text without `${` is returned unchanged.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, MissingVar> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut line = 1;
    while let Some(start) = rest.find("${") {
        let before = &rest[..start];
        line += before.matches('\n').count();
        out.push_str(before);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(':') {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match lookup(name).or_else(|| default.map(str::to_string)) {
            Some(value) => out.push_str(&value),
            None => {
                return Err(MissingVar {
                    var: name.to_string(),
                    line,
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "HOST").then(|| "ingester-1".to_string())
    }

    #[test]
    fn expands_values_and_defaults() {
        let text = "id: ${HOST}\nzone: ${ZONE:zone-a}\nplain: $HOME\n";
        assert_eq!(
            expand(text, lookup).expect("expands"),
            "id: ingester-1\nzone: zone-a\nplain: $HOME\n"
        );
    }

    #[test]
    fn missing_variable_names_line() {
        let text = "a: 1\nb: 2\nc: ${NOPE}\n";
        assert_eq!(
            expand(text, lookup),
            Err(MissingVar {
                var: "NOPE".into(),
                line: 3
            })
        );
    }
}
