//! YAML as a figment [`Format`], parsed by `serde_norway`.

use figment::providers::Format;
use serde::de::DeserializeOwned;

/// The YAML format for figment's `Data` provider: `Yaml::file_exact("purser.yaml")`.
pub struct Yaml;

impl Format for Yaml {
    type Error = serde_norway::Error;

    const NAME: &'static str = "YAML";

    fn from_str<T: DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        // A file holding only comments is a valid, empty configuration; the parser would see a
        // null document there, which is not a map.
        if is_blank(string) {
            return serde_norway::from_str("{}");
        }
        serde_norway::from_str(string)
    }
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::value::Dict;

    #[test]
    fn parses_maps_and_blank_documents() {
        let d: Dict = Yaml::from_str("a:\n  b: 1\n").unwrap();
        assert!(d.contains_key("a"));
        let d: Dict = Yaml::from_str("# nothing\n\n---\n").unwrap();
        assert!(d.is_empty());
        assert!(Yaml::from_str::<Dict>("a: [").is_err());
    }
}
