//! Scoring with a trained ensemble, and saving/loading it.
//!
//! A saved ensemble is a JSON manifest (model kind, config, ε) plus one burnpack blob per member,
//! so each fits a `jsonb` / `bytea` column or an object-store key.

use burn::store::{ModuleRecord, ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use super::model::{RewardModel, init_model};
use super::{MlError, Result};

/// Version of the manifest layout; bumped when it changes incompatibly.
const FORMAT: u32 = 1;

/// Trained reward-model members of one kind, on the plain (non-autodiff) device.
///
/// `Send + Sync`: publish an `Arc<Ensemble<_>>` to request handlers after training.
#[derive(Debug, Clone)]
pub struct Ensemble<M: RewardModel> {
    config: M::Config,
    random_answer_rate: f32,
    members: Vec<M>,
    device: Device,
}

/// An ensemble as bytes: [`Ensemble::save`] writes it, [`Ensemble::load`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedEnsemble {
    /// JSON: `{"format", "kind", "model": <config>, "random_answer_rate", "members"}`.
    pub manifest: String,
    /// One burnpack record per member, in order.
    pub members: Vec<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Manifest<C> {
    format: u32,
    kind: String,
    model: C,
    random_answer_rate: f32,
    members: usize,
}

impl<M: RewardModel> Ensemble<M> {
    /// Wraps trained members (already on the plain device, via `Module::valid`).
    pub(crate) fn from_members(
        config: M::Config,
        random_answer_rate: f32,
        members: Vec<M>,
    ) -> Self {
        Self {
            config,
            random_answer_rate,
            members,
            device: super::device(),
        }
    }

    /// The model configuration shared by every member.
    pub fn config(&self) -> &M::Config {
        &self.config
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Rewards of `inputs` from each member: `[member][input]`.
    pub fn member_rewards(&self, inputs: &[&M::Input]) -> Result<Vec<Vec<f32>>> {
        for input in inputs {
            M::check_input(&self.config, input)?;
        }
        let mut out = vec![Vec::with_capacity(inputs.len()); self.members.len()];
        // Chunks bound the activation memory of one forward pass.
        for chunk in inputs.chunks(M::SCORE_BATCH) {
            for (member, rewards) in self.members.iter().zip(&mut out) {
                let r = member.rewards(chunk, &self.device).into_data();
                rewards.extend(r.iter::<f32>());
            }
        }
        Ok(out)
    }

    /// Rewards of `inputs`, averaged over members.
    pub fn rewards(&self, inputs: &[&M::Input]) -> Result<Vec<f32>> {
        let per_member = self.member_rewards(inputs)?;
        let k = per_member.len() as f32;
        Ok((0..inputs.len())
            .map(|i| per_member.iter().map(|r| r[i]).sum::<f32>() / k)
            .collect())
    }

    /// P(a ≻ b) for each pair, averaged over members.
    ///
    /// This is the probability of a rater's answer, random-answer term included, so it is what
    /// the calibration table compares with observed answers.
    pub fn preferences(&self, pairs: &[(&M::Input, &M::Input)]) -> Result<Vec<f32>> {
        Ok(self
            .pair_stats(pairs)?
            .into_iter()
            .map(|(mean, _)| mean)
            .collect())
    }

    /// P(a ≻ b) for one pair, averaged over members.
    pub fn preference(&self, a: &M::Input, b: &M::Input) -> Result<f32> {
        Ok(self.preferences(&[(a, b)])?[0])
    }

    /// Variance across members of P(a ≻ b) for each pair: high where the members disagree,
    /// which is where a new label is most informative. Zero for a one-member ensemble.
    pub fn disagreement(&self, pairs: &[(&M::Input, &M::Input)]) -> Result<Vec<f32>> {
        Ok(self
            .pair_stats(pairs)?
            .into_iter()
            .map(|(_, var)| var)
            .collect())
    }

    /// (mean, population variance) over members of P(a ≻ b) for each pair.
    fn pair_stats(&self, pairs: &[(&M::Input, &M::Input)]) -> Result<Vec<(f32, f32)>> {
        // Score each side once per member: [a_0..a_n, b_0..b_n].
        let inputs: Vec<&M::Input> = pairs
            .iter()
            .map(|p| p.0)
            .chain(pairs.iter().map(|p| p.1))
            .collect();
        let per_member = self.member_rewards(&inputs)?;
        let eps = f64::from(self.random_answer_rate);
        let k = per_member.len() as f64;
        Ok((0..pairs.len())
            .map(|i| {
                let probs = per_member.iter().map(|r| {
                    let d = f64::from(r[i]) - f64::from(r[pairs.len() + i]);
                    (1.0 - eps) / (1.0 + (-d).exp()) + eps / 2.0
                });
                let (sum, sum_sq) = probs.fold((0.0, 0.0), |(s, q), p| (s + p, q + p * p));
                let mean = sum / k;
                ((mean) as f32, (sum_sq / k - mean * mean).max(0.0) as f32)
            })
            .collect())
    }

    /// The manifest as JSON: `{"format", "kind", "model", "random_answer_rate", "members"}`.
    pub fn manifest(&self) -> Result<String> {
        let manifest = Manifest {
            format: FORMAT,
            kind: M::KIND.to_string(),
            model: &self.config,
            random_answer_rate: self.random_answer_rate,
            members: self.members.len(),
        };
        serde_json::to_string(&manifest).map_err(|e| MlError::Save(e.to_string()))
    }

    /// Every member's weights in one SafeTensors file, for use outside Backflip.
    ///
    /// Member `i`'s tensors are named `"{i}.{layer}.{weight|bias}"` (e.g. `0.hidden.weight`),
    /// in Burn's layouts: a linear layer's weight is `[d_in, d_out]` (so `y = x·W + b`), a
    /// convolution's `[c_out, c_in, k, k]`. `metadata` is stored in the file's header next to
    /// `backflip.manifest` (this ensemble's [`manifest`](Self::manifest)).
    pub fn to_safetensors(&self, metadata: &[(&str, String)]) -> Result<Vec<u8>> {
        let mut store =
            SafetensorsStore::from_bytes(None).metadata("backflip.manifest", self.manifest()?);
        for (key, value) in metadata {
            store = store.metadata(*key, value.clone());
        }
        let save = |e: &dyn std::fmt::Display| MlError::Save(e.to_string());
        self.members.save_into(&mut store).map_err(|e| save(&e))?;
        store.get_bytes().map_err(|e| save(&e))
    }

    /// Serialises the manifest and every member's weights (burnpack, in memory).
    pub fn save(&self) -> Result<SavedEnsemble> {
        let manifest = self.manifest()?;
        let members = self
            .members
            .iter()
            .map(|m| {
                let bytes = m.clone().into_record().into_bytes();
                bytes
                    .map(|b| b.to_vec())
                    .map_err(|e| MlError::Save(e.to_string()))
            })
            .collect::<Result<_>>()?;
        Ok(SavedEnsemble { manifest, members })
    }

    /// Rebuilds an ensemble saved by [`save`](Self::save); checks kind, format and shapes.
    pub fn load(saved: &SavedEnsemble) -> Result<Self> {
        let load_err = |e: &dyn std::fmt::Display| MlError::Load(e.to_string());
        let manifest: Manifest<M::Config> =
            serde_json::from_str(&saved.manifest).map_err(|e| load_err(&e))?;
        if manifest.format != FORMAT || manifest.kind != M::KIND {
            return Err(load_err(&format!(
                "manifest is format {} of kind {:?}, expected format {FORMAT} of kind {:?}",
                manifest.format,
                manifest.kind,
                M::KIND
            )));
        }
        if manifest.members != saved.members.len() || saved.members.is_empty() {
            return Err(load_err(&"member count does not match the manifest"));
        }
        let device = super::device();
        let members = saved
            .members
            .iter()
            .map(|blob| {
                let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(blob.clone()))
                    .map_err(|e| load_err(&e))?;
                // Initialised weights are overwritten; validation rejects a shape mismatch.
                init_model::<M>(&manifest.model, &device, None)
                    .try_load_record(record)
                    .map_err(|e| load_err(&e))
            })
            .collect::<Result<_>>()?;
        Ok(Self::from_members(
            manifest.model,
            manifest.random_answer_rate,
            members,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{ClipReward, MlpReward, MlpRewardConfig};

    #[test]
    fn ensembles_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Ensemble<MlpReward>>();
        send_sync::<Ensemble<ClipReward>>();
    }

    #[test]
    fn manifest_names_kind_config_and_members() {
        let config = MlpRewardConfig::new(3).with_d_hidden(2);
        let member = init_model::<MlpReward>(&config, &crate::ml::device(), None);
        let saved = Ensemble::<MlpReward>::from_members(config, 0.1, vec![member])
            .save()
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&saved.manifest).unwrap();
        assert_eq!(manifest["kind"], "mlp");
        assert_eq!(manifest["model"]["d_hidden"], 2);
        assert_eq!(manifest["members"], 1);
        eprintln!("manifest: {}", saved.manifest);
    }
}
