use crate::Failure;
use clap::Args;
use std::process::ExitCode;
#[derive(Args, Debug)]
pub struct FlowsArgs {}
pub fn run_flows(_args: FlowsArgs) -> Result<ExitCode, Failure> {
    todo!()
}
