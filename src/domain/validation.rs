//! Field-level validation failures, reported together as Coder's `validations` array.

use serde::Serialize;

/// One failed rule: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub field: String,
    pub detail: String,
}

/// All failed rules of one request; empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validations(pub Vec<Validation>);

impl Validations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Validation {
            field: field.into(),
            detail: detail.into(),
        });
    }

    /// Records the error of `result` under `field` and returns its value, if any.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(detail) => {
                self.push(field, detail.to_string());
                None
            }
        }
    }

    /// Takes a required field: missing is a validation of its own.
    pub fn required<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        value: Option<String>,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Option<T> {
        match value {
            None => {
                self.push(
                    field,
                    "Validation failed for tag \"required\" with value: \"\"".to_string(),
                );
                None
            }
            Some(v) => self.check(field, parse(v)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing failed, else every failure.
    pub fn finish(self) -> Result<(), Validations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl std::fmt::Display for Validations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.detail))
            .collect();
        f.write_str(&parts.join("; "))
    }
}
