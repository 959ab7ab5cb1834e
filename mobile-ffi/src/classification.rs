//! What the server answers for one image.

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, uniffi::Record, serde::Deserialize)]
pub struct LabelScore {
    /// The class name from the recognizer's manifest.
    pub label: String,
    /// Softmax probability in `[0, 1]`.
    pub score: f32,
}

/// The server's answer for one image.
#[derive(Debug, Clone, PartialEq, uniffi::Record, serde::Deserialize)]
pub struct Classification {
    /// Every class with its probability, best first.
    pub labels: Vec<LabelScore>,
    /// The recognizer's name, as the server reports it.
    #[serde(default)]
    pub model: String,
    /// Time the server spent on the request, in milliseconds (0 if it did not say).
    #[serde(default)]
    pub latency_ms: f64,
}

impl Classification {
    /// The best label, if any.
    pub fn top(&self) -> Option<&LabelScore> {
        self.labels.first()
    }
}
