//! Classify a PNG (or JPEG) with a trained model:
//! `cargo run -p cifar10-infer --example classify_png -- model.safetensors cat.png`
//! (needs the default `image` feature).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(image)) = (args.next(), args.next()) else {
        return Err("usage: classify_png MODEL.safetensors IMAGE.png".into());
    };
    let classifier = infer::Classifier::from_path(model)?;
    let prediction = classifier.classify_image_file(&image)?;
    for ranked in prediction.top_k(3) {
        println!("{:<12} {:5.1}%", ranked.label, 100.0 * ranked.probability);
    }
    Ok(())
}
