pub mod fixtures;

mod cli;
mod finetune;
mod golden;
mod model;
mod pipeline;
mod prune;
