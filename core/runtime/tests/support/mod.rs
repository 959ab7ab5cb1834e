pub mod graphs;
