//! A dataset in memory: images decoded to 8-bit CHW at one size, and their labelled attributes.

use image::RgbImage;
use scrim_core::InputSpec;

use crate::{Error, Result};

/// A labelled attribute of every image (e.g. `gender` with classes `male`, `female`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attribute {
    /// Name used on the command line (`--desired gender`).
    pub name: String,
    /// Class names; labels index into this.
    pub classes: Vec<String>,
    /// One label per image.
    pub labels: Vec<u16>,
}

impl Attribute {
    /// The share of the most frequent class (the majority-class rate) among `indices`.
    pub fn majority_rate(&self, indices: &[usize]) -> f64 {
        let mut counts = vec![0usize; self.classes.len()];
        for &i in indices {
            counts[self.labels[i] as usize] += 1;
        }
        counts.iter().copied().max().unwrap_or(0) as f64 / indices.len().max(1) as f64
    }
}

/// Decoded images at one square size, with their attributes.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Dataset {
    /// Side length in pixels.
    pub size: usize,
    /// `N × 3 × size × size` bytes, CHW per image.
    #[serde(skip)]
    pub images: Vec<u8>,
    /// A stable identifier per image (its relative path).
    pub names: Vec<String>,
    /// Attributes, each with one label per image.
    pub attributes: Vec<Attribute>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("size", &self.size)
            .field(
                "attributes",
                &self.attributes.iter().map(|a| &a.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }
    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        3 * self.size * self.size
    }
    /// The CHW bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }
    /// The input spec of models trained on this dataset.
    pub fn input(&self) -> InputSpec {
        InputSpec::rgb(self.size, self.size)
    }

    /// Finds an attribute by name, with a message listing the ones that exist.
    ///
    /// # Errors
    /// [`Error::UnknownLabel`] for an unknown name.
    pub fn attribute(&self, name: &str) -> Result<&Attribute> {
        Ok(&self.attributes[self.attribute_index(name)?])
    }

    /// The position of an attribute in [`Dataset::attributes`] (`age` names `age_group`).
    ///
    /// # Errors
    /// [`Error::UnknownLabel`] for an unknown name.
    pub fn attribute_index(&self, name: &str) -> Result<usize> {
        let canonical = match name {
            "age" => "age_group",
            other => other,
        };
        self.attributes
            .iter()
            .position(|a| a.name == canonical)
            .ok_or_else(|| Error::UnknownLabel {
                name: name.into(),
                known: self.attributes.iter().map(|a| a.name.clone()).collect(),
            })
    }

    /// The pixels of image `i` as values in `[0, 1]` (CHW order), as the device sees them.
    pub fn unit_pixels(&self, i: usize) -> impl Iterator<Item = f32> + '_ {
        self.image(i).iter().map(|&b| f32::from(b) / 255.0)
    }

    /// Image `i` as a `[1, 3, S, S]` tensor in `[0, 1]`, the input of the device runtime.
    ///
    /// # Errors
    /// Never for a well-formed dataset (the shape always matches).
    pub fn image_tensor(&self, i: usize) -> Result<scrim_core::ImageTensor> {
        Ok(scrim_core::ImageTensor::new(
            [1, 3, self.size, self.size],
            self.unit_pixels(i).collect(),
        )?)
    }

    /// A seeded random subset of at most `n` images (all of them when `n` is 0 or larger than
    /// the dataset), in a random order.
    pub fn sample(&self, n: usize, seed: u64) -> Dataset {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        if n > 0 {
            idx.truncate(n);
        }
        self.subset(&idx)
    }

    /// Keeps only the images at `indices` (in that order).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            size: self.size,
            images,
            names: indices.iter().map(|&i| self.names[i].clone()).collect(),
            attributes: self
                .attributes
                .iter()
                .map(|a| Attribute {
                    name: a.name.clone(),
                    classes: a.classes.clone(),
                    labels: indices.iter().map(|&i| a.labels[i]).collect(),
                })
                .collect(),
        }
    }

    /// Image `i` as an RGB image.
    pub fn rgb(&self, i: usize) -> RgbImage {
        let s = self.size;
        let chw = self.image(i);
        RgbImage::from_fn(s as u32, s as u32, |x, y| {
            let p = y as usize * s + x as usize;
            image::Rgb([chw[p], chw[s * s + p], chw[2 * s * s + p]])
        })
    }
}
