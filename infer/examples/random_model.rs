//! Writes a seeded, untrained model (the tutorial's initialisation) to try the `cifar10`
//! commands without training: `cargo run -p cifar10-infer --example random_model -- out.safetensors [SEED]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: random_model OUT.safetensors [SEED]")?;
    let seed = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    infer::random_weights(seed).save(&path)?;
    println!("wrote {path} (seed {seed}, untrained)");
    Ok(())
}
