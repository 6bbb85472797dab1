pub mod fixtures;

mod cli;
mod engine;
mod finetune;
mod golden;
mod model;
mod pipeline;
mod prune;
