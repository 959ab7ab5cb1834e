//! uniffi's binding generator, pinned to the uniffi version this crate uses.
//! `scripts/bindings` runs it; see `mobile-ffi/README.md`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
