//! A model whose stem was encrypted with a key runs in tract and, on images under the key's patch
//! transform, matches the direct computation of the plain model on the plain images.

mod support;

#[test]
fn encrypted_classifier_matches_direct_computation() {
    support::graphs::check_against_reference(&support::encrypted_classifier());
}
