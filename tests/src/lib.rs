//! End-to-end tests across the Scrim workspace live in `tests/`; this library is empty.
