//! FQDN filters (`source_fqdn`, `destination_fqdn`): patterns matched
//! against the names a flow's endpoints were looked up by
//! (`source_names`, `destination_names`), with Hubble's syntax and meaning.
//!
//! A pattern holds letters, digits, `-`, `_`, `.` and `*`; it is
//! case-insensitive, a trailing dot is ignored, and `*` stands for any run
//! of the characters a name may hold. A flow with no names matches no
//! pattern, so a blacklist on names excludes nothing from such flows (what
//! the Hubble UI relies on: it always blacklists `*.cluster.local*`).

use regex::Regex;

use super::FilterError;

#[derive(Debug, Clone)]
pub struct FqdnPattern(Regex);

impl FqdnPattern {
    pub fn parse(pattern: &str) -> Result<Self, FilterError> {
        let err = || FilterError::Fqdn(pattern.to_owned());
        let lower = pattern.trim().to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        let valid = !trimmed.is_empty()
            && trimmed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'));
        if !valid {
            return Err(err());
        }
        let mut expr = String::from("^");
        for c in trimmed.chars() {
            match c {
                '.' => expr.push_str("[.]"),
                '*' => expr.push_str("[-a-zA-Z0-9_.]*"),
                c => expr.push(c),
            }
        }
        expr.push('$');
        Regex::new(&expr).map(FqdnPattern).map_err(|_| err())
    }

    /// Whether any of a flow's names matches.
    pub fn matches_any(&self, names: &[String]) -> bool {
        names.iter().any(|name| self.0.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_star_stands_for_any_run_of_name_characters() {
        let p = FqdnPattern::parse("*.cluster.local*").unwrap();
        assert!(p.matches_any(&names(&["web.default.svc.cluster.local"])));
        assert!(p.matches_any(&names(&["web.default.svc.cluster.local."])));
        assert!(!p.matches_any(&names(&["example.com"])));
    }

    #[test]
    fn patterns_are_whole_case_insensitive_names_without_their_trailing_dot() {
        let p = FqdnPattern::parse("API.Example.com.").unwrap();
        assert!(p.matches_any(&names(&["api.example.com"])));
        assert!(!p.matches_any(&names(&["xapi.example.com", "api.example.com.evil"])));
        assert!(!p.matches_any(&names(&["apixexample.com"])), "a dot is a literal dot");
    }

    #[test]
    fn a_flow_without_names_matches_no_pattern() {
        assert!(!FqdnPattern::parse("*").unwrap().matches_any(&[]));
    }

    #[test]
    fn characters_outside_names_are_refused() {
        for bad in ["", "a b", "(x)", "a/b", "^x$", "."] {
            assert_eq!(
                FqdnPattern::parse(bad).unwrap_err(),
                FilterError::Fqdn(bad.to_owned()),
                "{bad:?}"
            );
        }
    }
}
