//! Parity cases for kernels/norm.cu (being written).

use anyhow::Result;

use super::Ctx;

pub fn run(_c: &mut Ctx) -> Result<()> {
    Ok(())
}
