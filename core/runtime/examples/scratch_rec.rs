use scrim_core::{BatchMode, ImageTensor, Model};
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let batch: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(16);
    let secs: f64 = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(5.0);
    let model = Model::load_path(p.as_ref(), BatchMode::Planned { max: 32 }).unwrap();
    let spec = model.manifest().input;
    let n = spec.channels * spec.height * spec.width;
    let one = ImageTensor::new(
        [1, spec.channels, spec.height, spec.width],
        (0..n).map(|i| (i % 17) as f32 / 17.0).collect(),
    )
    .unwrap();
    let input = ImageTensor::stack(&vec![one; batch]).unwrap();
    model.run(&input).unwrap();
    let t = std::time::Instant::now();
    let mut k = 0;
    while t.elapsed().as_secs_f64() < secs {
        model.run(&input).unwrap();
        k += batch;
    }
    println!("{:.0} images/s", k as f64 / t.elapsed().as_secs_f64());
}
