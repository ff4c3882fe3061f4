#!/usr/bin/python3
"""Tests of the cloud-side training tools (tools/phantom_dr.py, tools/host_lesions.py,
tools/train_demo.py) and of the
bundled demo model on domain-randomized studies it never saw (issue 14).

Run: /usr/bin/python3 -m unittest tests/tools/training_tools_test.py
(ctest `tools.training`; STROKEBOX_BINARY points at build/strokebox for the model checks).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import ensemble_models  # noqa: E402
import evaluate_model  # noqa: E402
import host_lesions  # noqa: E402
import nnunet_preprocess as npp  # noqa: E402
import phantom_dr  # noqa: E402
import train_demo  # noqa: E402

BINARY = os.environ.get("STROKEBOX_BINARY", os.path.join(ROOT, "build", "strokebox"))
MODEL = os.path.join(ROOT, "models", "demo")


def adc_micro(study):
    scale = {"1e-6 mm2/s": 1.0, "1e-3 mm2/s": 1e3, "mm2/s": 1e6}[study["params"]["adc_unit"]]
    return study["adc"] * scale


class PhantomDrPhysics(unittest.TestCase):
    """The generator's infarcts restrict diffusion and its look-alikes do not."""

    @classmethod
    def setUpClass(cls):
        cls.study = phantom_dr.make_study(9901, lesions=2)
        cls.free = phantom_dr.make_study(9902, lesions=0)

    def test_volumes_share_one_grid_and_truth_is_binary(self):
        s = self.study
        self.assertEqual(s["dwi"].shape, s["adc"].shape)
        self.assertEqual(s["dwi"].shape, s["truth"].shape)
        self.assertEqual(set(np.unique(s["truth"])) - {0, 1}, set())
        self.assertGreater(int(s["truth"].sum()), 0)
        self.assertEqual(list(s["dwi"].shape), s["params"]["shape"])

    def test_infarct_adc_is_restricted_and_dwi_bright(self):
        s = self.study
        t = s["truth"] > 0
        adc = adc_micro(s)
        inner = t & (np.roll(t, 1, 0) & np.roll(t, -1, 0) & np.roll(t, 1, 1) & np.roll(t, -1, 1))
        inner = inner if inner.sum() > 20 else t
        med_lesion = float(np.median(adc[inner]))
        self.assertLess(med_lesion, 700, s["params"]["lesions"])
        self.assertGreater(med_lesion, 250, s["params"]["lesions"])
        brain = (adc > 500) & (adc < 1100) & ~t
        self.assertGreater(float(np.median(s["dwi"][inner])), 1.2 * float(np.median(s["dwi"][brain])))

    def test_infarct_adc_is_reduced_relative_to_its_own_tissue(self):
        # An acute infarct's ADC is its tissue's, reduced by a quarter to a half (relative ADC
        # 0.45-0.75), within 350-620 absolute: never one that merely matches its surroundings.
        lesions = self.study["params"]["lesions"]
        self.assertGreater(len(lesions), 0)
        for l in lesions:
            self.assertGreaterEqual(l["adc"], 350.0, l)
            self.assertLessEqual(l["adc"], 620.0, l)
            self.assertTrue(0.45 <= l["relative_adc"] <= 0.75, l)
            self.assertTrue(450.0 <= l["normal_adc"] <= 1100.0, l)
            self.assertLessEqual(l["adc"] / l["normal_adc"], 0.76, l)
            self.assertAlmostEqual(l["adc"], min(max(l["relative_adc"] * l["normal_adc"], 350.0), 620.0), delta=0.2)

    def test_normal_tissue_adc_is_physiological(self):
        adc = adc_micro(self.free)
        tissue = adc[(adc > 300) & (adc < 1500)]
        self.assertGreater(tissue.size, 1000)
        self.assertTrue(600 < float(np.median(tissue)) < 1000, float(np.median(tissue)))
        self.assertEqual(int(self.free["truth"].sum()), 0)
        self.assertEqual(self.free["params"]["lesion_count"], 0)

    def test_apparent_adc_falls_with_b_as_kurtosis_says(self):
        # At b = 1000 the apparent ADC is the drawn one; above it a kurtotic tissue's falls
        # (white matter 780, K 1: about 709 at b 1500), free water's does not.
        a = lambda b, adc, k: float(np.log(1.0 / phantom_dr.dki_attenuation(b, adc * 1e-6, k)) / b * 1e6)
        self.assertAlmostEqual(a(1000, 780, 1.0), 780.0, places=3)
        self.assertAlmostEqual(a(1500, 780, 1.0), 709.2, places=1)
        self.assertAlmostEqual(a(2000, 3000, 0.0), 3000.0, places=3)
        self.assertGreater(a(800, 500, 1.5), a(1000, 500, 1.5))
        # Signal never rises with b (the model is kept in its monotonic range).
        s = [float(phantom_dr.dki_attenuation(b, 2.6e-3, 1.2)) for b in range(0, 4001, 250)]
        self.assertTrue(all(x >= y for x, y in zip(s, s[1:])), s)
        k = self.study["params"]["kurtosis"]
        self.assertGreater(k["infarct"], k["gm"])
        self.assertEqual(k["csf"], 0.0)

    def test_posterior_coil_gain_brightens_the_back_of_the_head_not_its_adc(self):
        # Real supine heads lie on the coil's posterior elements: occiput and cerebellum are the
        # brightest part of the DWI (dcm_qa decubitus, Canon Galan). The gain multiplies both
        # b-images alike, so the ADC does not see it. Seed 9937: posterior gain 1.78; 9931: none.
        def ratios(seed):
            st = phantom_dr.make_study(seed, lesions=0)
            adc, dwi, a = adc_micro(st), st["dwi"], st["affine"]
            ijk = np.indices(dwi.shape).reshape(3, -1)
            y = (a[1, :3] @ ijk + a[1, 3]).reshape(dwi.shape)  # RAS: anterior is +y
            par = (adc > 500) & (adc < 1000)
            yc = float(np.median(y[par]))
            post, ant = par & (y < yc - 25), par & (y > yc + 25)
            return (st["params"], float(np.median(dwi[post]) / np.median(dwi[ant])),
                    float(np.median(adc[post]) / np.median(adc[ant])))
        p, dwi_ratio, adc_ratio = ratios(9937)
        self.assertTrue(p["coil_gain_posterior"])
        self.assertGreater(p["coil_surface_gain"], 1.0)
        self.assertGreater(dwi_ratio, 1.25)
        self.assertAlmostEqual(adc_ratio, 1.0, delta=0.05)
        p, dwi_ratio, adc_ratio = ratios(9931)
        self.assertEqual(p["coil_surface_gain"], 0.0)
        self.assertLess(dwi_ratio, 1.1)
        self.assertAlmostEqual(adc_ratio, 1.0, delta=0.05)

    def test_same_seed_same_study(self):
        again = phantom_dr.make_study(9902, lesions=0)
        np.testing.assert_array_equal(again["dwi"], self.free["dwi"])
        np.testing.assert_array_equal(again["adc"], self.free["adc"])

    def test_written_study_reads_back_with_its_spacing(self):
        with tempfile.TemporaryDirectory() as d:
            phantom_dr.write_study(self.study, d)
            data, spacing, _ = train_demo.npp.read_nifti(os.path.join(d, "image_0000.nii.gz"))
            self.assertEqual(data.shape, self.study["dwi"].shape[::-1])
            np.testing.assert_allclose(spacing[::-1], self.study["params"]["spacing_mm"], rtol=1e-3)
            with open(os.path.join(d, "phantom.json")) as f:
                p = json.load(f)
            self.assertEqual(p["seed"], 9901)


def synthetic_host(folder: str, b: float = 1000.0) -> None:
    """A host folder as `strokebox segment --save-inputs` writes it: an ellipsoid head of
    parenchyma (ADC 800, S0 1000) around a CSF ventricle (ADC 3000), 2x2x4 mm voxels, with its
    b-value in report.json."""
    import nibabel as nib
    g = np.indices((64, 64, 30), dtype=np.float32)
    r = np.sqrt(((g[0] - 32) / 26) ** 2 + ((g[1] - 32) / 28) ** 2 + ((g[2] - 15) / 13) ** 2)
    adc = np.where(r < 1, 800.0, 0.0).astype(np.float32)
    vent = np.sqrt(((g[0] - 32) / 5) ** 2 + ((g[1] - 32) / 9) ** 2 + ((g[2] - 15) / 4) ** 2) < 1
    adc[vent] = 3000.0
    s0 = np.where(r < 1, 1000.0, 0.0) * np.where(vent, 1.6, 1.0)
    dwi = (s0 * np.exp(-b * adc * 1e-6) + np.random.default_rng(0).rayleigh(4.0, adc.shape)).astype(np.float32)
    os.makedirs(folder, exist_ok=True)
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    for name, vol in (("dwi", dwi), ("adc", adc)):
        nib.save(nib.Nifti1Image(vol, affine), os.path.join(folder, f"{name}.nii.gz"))
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump({"dwi_b_value": b}, f)


class HostLesionsPhysics(unittest.TestCase):
    """tools/host_lesions.py: infarcts inserted into a (healthy) host follow the diffusion
    signal model, stay in parenchyma and change nothing else."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.host_dir = os.path.join(cls.tmp.name, "host_a")
        synthetic_host(cls.host_dir)
        cls.host = host_lesions.load_host(cls.host_dir)
        cls.study = host_lesions.make_study(cls.host, 4242, lesions=2)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_infarct_adc_is_a_reduced_fraction_of_the_hosts(self):
        s, h = self.study, self.host
        t = s["truth"] > 0
        self.assertGreater(int(t.sum()), 10, s["params"])
        ratio = s["adc"][t] / h["adc"][t]
        self.assertTrue(np.all(ratio >= 0.35 - 1e-4) and np.all(ratio <= 0.85 + 1e-4), (ratio.min(), ratio.max()))
        self.assertTrue(np.all(s["adc"][t] >= host_lesions.MIN_INFARCT_ADC - 1e-3))
        self.assertLess(float(np.median(s["adc"][t])), 620)

    def test_relative_adc_range_moves_the_restriction_and_nothing_else(self):
        h = self.host
        mild = host_lesions.make_study(h, 4242, lesions=2, relative_adc=(0.80, 0.85))
        np.testing.assert_array_equal(mild["truth"], self.study["truth"])  # same places and sizes
        t = mild["truth"] > 0
        ratio = mild["adc"][t] / h["adc"][t]
        self.assertGreater(float(np.median(ratio)), 0.78)
        self.assertLessEqual(float(ratio.max()), 0.90 + 1e-4)  # heterogeneity clipped 0.05 above
        self.assertGreater(float(np.median(ratio)), float(np.median(self.study["adc"][t] / h["adc"][t])))
        for l in mild["params"]["lesions"]:
            self.assertTrue(0.80 <= l["relative_adc"] <= 0.85, l)
        with self.assertRaises(SystemExit):
            host_lesions.main(["--hosts", self.host_dir, "--out", self.tmp.name, "--seeds", "1",
                               "--relative-adc", "0.5,1.2"])

    def test_dwi_brightens_as_the_adc_reduction_implies(self):
        s, h = self.study, self.host
        t = s["truth"] > 0
        gain, b = s["params"]["dwi_gain"], h["b"]
        s0_host = h["dwi"][t] * np.exp(b * h["adc"][t] * 1e-6)
        s0_new = (s["dwi"][t] / gain) * np.exp(b * s["adc"][t] * 1e-6)
        factor = s0_new / s0_host  # the infarct's T2 prolongation, 1.0-1.4
        self.assertTrue(np.all(factor > 1.0 - 1e-3) and np.all(factor < 1.4 + 1e-3), (factor.min(), factor.max()))
        self.assertGreater(float(np.median(s["dwi"][t] / gain)), 1.25 * float(np.median(h["dwi"][t])))

    def test_infarcts_stay_in_parenchyma_and_nothing_else_changes(self):
        s, h = self.study, self.host
        t = s["truth"] > 0
        self.assertFalse(np.any(t & (h["adc"] > 1500)), "truth in CSF")
        self.assertFalse(np.any(t & (h["adc"] == 0)), "truth outside the head")
        rim = ndi_dilate(t, 3)
        np.testing.assert_allclose(s["adc"][~rim], h["adc"][~rim])
        np.testing.assert_allclose(s["dwi"][~rim] / s["params"]["dwi_gain"], h["dwi"][~rim], rtol=1e-5)
        vox_ml = 2 * 2 * 4 / 1000.0
        self.assertAlmostEqual(s["params"]["total_lesion_volume_ml"], float(t.sum()) * vox_ml, places=1)

    def test_lesion_free_study_keeps_the_host_and_an_empty_truth(self):
        free = host_lesions.make_study(self.host, 4243, lesions=0)
        self.assertEqual(int(free["truth"].sum()), 0)
        np.testing.assert_array_equal(free["adc"], self.host["adc"])

    def test_failed_fat_suppression_adds_fat_by_the_signal_model_and_no_label(self):
        # The same seed with and without fat: same infarcts and truth (the fat has its own random
        # stream); the difference is a fat signal F added to S0 and F * exp(-b ADC_fat) to S_b.
        h, b = self.host, self.host["b"]
        plain = host_lesions.make_study(h, 4244, lesions=1)
        fat = host_lesions.make_study(h, 4244, lesions=1, fat=1.0)
        self.assertIsNone(plain["params"]["fat"])
        p = fat["params"]["fat"]
        self.assertIsNotNone(p)
        self.assertEqual(fat["params"]["lesions"], plain["params"]["lesions"])
        np.testing.assert_array_equal(fat["truth"], plain["truth"])
        self.assertNotEqual(p["shift_axis"], 2, "chemical shift along the slice axis")
        self.assertTrue(20 <= p["adc"] <= 200 and 0.05 <= p["residual"] <= 0.6, p)
        gain = fat["params"]["dwi_gain"]
        self.assertEqual(gain, plain["params"]["dwi_gain"])

        def s0(s):
            return s["dwi"] / gain * np.exp(b * s["adc"].astype(np.float64) * 1e-6)
        d0 = s0(fat) - s0(plain)
        db = (fat["dwi"] - plain["dwi"]) / gain
        strong = d0 > 0.2 * float(d0.max())
        self.assertGreater(int(strong.sum()), 50)
        np.testing.assert_allclose(db[strong] / d0[strong], np.exp(-b * p["adc"] * 1e-6), rtol=2e-3)
        # Fat lies outside the brain or within the shell plus the shift of its edge, never deep.
        from scipy import ndimage
        filled = ndimage.binary_fill_holes(h["brain"])
        depth = ndimage.distance_transform_edt(filled, sampling=h["spacing"])
        reach = abs(p["shift_mm"]) + 2.0
        self.assertFalse(np.any(strong & (depth > reach)), "fat deep inside the brain")
        # Where fat overlaps the brain, the DWI brightens and the ADC drops, like an infarct's.
        over = strong & filled & (plain["truth"] == 0)
        if over.any():
            self.assertTrue(np.all(fat["adc"][over] < plain["adc"][over]))
            self.assertTrue(np.all(fat["dwi"][over] > plain["dwi"][over]))

    def test_nyquist_ghost_of_the_fat_is_a_weak_copy_half_the_field_of_view_away(self):
        # In the S0 domain every addition is exact: fat alone adds F, its N/2 ghost adds
        # amp * F rolled by half the matrix along the phase-encode (shift) axis.
        h, b = self.host, self.host["b"]
        plain = host_lesions.make_study(h, 4245, lesions=0)
        fat = host_lesions.make_study(h, 4245, lesions=0, fat=1.0)
        ghost = host_lesions.make_study(h, 4245, lesions=0, fat=1.0, nyquist=1.0)
        p = ghost["params"]["fat"]
        self.assertTrue(0.05 <= p["n2_ghost"] <= 0.25, p)
        self.assertNotIn("n2_ghost", fat["params"]["fat"])
        gain = plain["params"]["dwi_gain"]

        def s0(s):
            return s["dwi"].astype(np.float64) / gain * np.exp(b * s["adc"].astype(np.float64) * 1e-6)
        f = s0(fat) - s0(plain)
        expect = p["n2_ghost"] * np.roll(f, f.shape[p["shift_axis"]] // 2, axis=p["shift_axis"])
        got = s0(ghost) - s0(fat)
        np.testing.assert_allclose(got, expect, atol=2e-3 * float(f.max()))
        self.assertGreater(float(expect.max()), 0.04 * float(f.max()))
        np.testing.assert_array_equal(ghost["truth"], plain["truth"])

    def test_noise_estimate_recovers_a_known_sigma(self):
        rng = np.random.default_rng(5)
        g = np.indices((40, 40, 40), dtype=np.float32)
        smooth = 500 + 3 * g[0] + 2 * g[1]  # anatomy-like gradient, which the 6-neighbour mean cancels
        mask = np.zeros(smooth.shape, bool)
        mask[2:-2, 2:-2, 2:-2] = True
        for sigma in (5.0, 20.0):
            est = host_lesions.estimate_noise(smooth + rng.normal(0, sigma, smooth.shape), mask)
            self.assertAlmostEqual(est / sigma, 1.0, delta=0.08)
        self.assertEqual(host_lesions.estimate_noise(smooth, np.zeros_like(mask)), 0.0)

    def test_lower_snr_reacquires_the_same_infarcts_at_the_target_snr(self):
        # The same seed with and without --low-snr: same infarcts and truth (own random stream);
        # the trace DWI's SNR in the parenchyma falls to the drawn target, the ADC is refitted
        # from the noisy pair (unbiased in the median, wider), and outside the head the ADC is
        # the host's.
        h = self.host
        plain = host_lesions.make_study(h, 4246, lesions=1)
        noisy = host_lesions.make_study(h, 4246, lesions=1, low_snr=1.0, snr_range=(8.0, 8.0))
        self.assertIsNone(plain["params"]["low_snr"])
        p = noisy["params"]["low_snr"]
        self.assertEqual(p["target_snr"], 8.0)
        self.assertGreater(p["host_snr"], 50)
        self.assertEqual(noisy["params"]["lesions"], plain["params"]["lesions"])
        np.testing.assert_array_equal(noisy["truth"], plain["truth"])
        gain = plain["params"]["dwi_gain"]
        par = h["parenchyma"] & (plain["truth"] == 0)
        dwi = noisy["dwi"] / gain
        snr = float(np.median(dwi[par])) / host_lesions.estimate_noise(dwi, par)
        self.assertTrue(6.0 < snr < 10.5, snr)
        self.assertAlmostEqual(float(np.median(noisy["adc"][par])), float(np.median(plain["adc"][par])), delta=40)
        self.assertGreater(float(np.std(noisy["adc"][par])), 3 * float(np.std(plain["adc"][par])) + 50)
        self.assertGreaterEqual(float(noisy["adc"].min()), 0.0)
        outside = h["adc"] == 0
        outside &= ~ndi_dilate(~outside, 2)
        np.testing.assert_array_equal(noisy["adc"][outside], plain["adc"][outside])
        # A mild infarct stays restricted on average: its median ADC below the tissue's.
        t = plain["truth"] > 0
        self.assertLess(float(np.median(noisy["adc"][t])), 0.9 * float(np.median(noisy["adc"][par])))
        # A host already noisier than the target is left as it is.
        same = host_lesions.make_study(h, 4246, lesions=1, low_snr=1.0, snr_range=(1e6, 1e6))
        self.assertEqual(same["params"]["low_snr"]["added_sigma"], 0.0)
        np.testing.assert_array_equal(same["dwi"], plain["dwi"])
        np.testing.assert_array_equal(same["adc"], plain["adc"])

    def test_command_writes_studies_the_trainer_reads_and_names_a_bad_host(self):
        out = os.path.join(self.tmp.name, "out")
        host_lesions.main(["--hosts", os.path.join(self.tmp.name, "host_*"), "--out", out,
                           "--seeds", "4000-4001", "--jobs", "1"])
        for seed in (4000, 4001):
            folder = os.path.join(out, f"seed_{seed}")
            chans, spacing, _, truth = train_demo.load_case(folder)
            self.assertEqual(len(chans), 2)
            self.assertEqual(chans[0].shape, truth.shape)
            np.testing.assert_allclose(spacing, [4.0, 2.0, 2.0])  # z, y, x as nnU-Net reads it
            with open(os.path.join(folder, "phantom.json")) as f:
                self.assertEqual(json.load(f)["host"], "host_a")
        bad = os.path.join(self.tmp.name, "bad")
        os.makedirs(bad)
        with self.assertRaisesRegex(ValueError, "bad: no dwi.nii.gz.*--save-inputs"):
            host_lesions.load_host(bad)
        with self.assertRaises(SystemExit):
            host_lesions.main(["--hosts", os.path.join(self.tmp.name, "nothing_*"), "--out", out, "--seeds", "1"])

    def test_a_study_linked_into_another_dr_dir_is_preprocessed_once(self):
        # tools/train_default_model.sh links data/dr studies into data/dr_snr; the cache is keyed
        # by the real path, so the link reuses the first preprocessing.
        out = os.path.join(self.tmp.name, "cache_case")
        host_lesions.main(["--hosts", os.path.join(self.tmp.name, "host_*"), "--out", out,
                           "--seeds", "4010", "--jobs", "1"])
        study = os.path.join(out, "seed_4010")
        linked = os.path.join(self.tmp.name, "dr_linked")
        os.makedirs(linked)
        os.symlink(study, os.path.join(linked, "seed_4010"))
        cache = os.path.join(self.tmp.name, "cache")
        logged = []
        first = train_demo.preprocess_cached(study, cache, [2.0, 2.0, 2.0], logged.append)
        again = train_demo.preprocess_cached(os.path.join(linked, "seed_4010"), cache, [2.0, 2.0, 2.0], logged.append)
        self.assertEqual(len(logged), 1, logged)
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])


class EnsembleModels(unittest.TestCase):
    """tools/ensemble_models.py: members that the box can average become one package; others
    are refused with the member and the reason named."""

    def member(self, root, name, mean=593.0, features=(8, 16)):
        d = os.path.join(root, name)
        os.makedirs(d)
        props = {"mean": mean, "median": 550.0, "std": 195.0, "min": 0.0, "max": 2400.0,
                 "percentile_00_5": 300.0, "percentile_99_5": 1383.0}
        pkg = {"format": "strokebox-model/1", "model_id": name, "networks": ["model.onnx"],
               "channels": [train_demo.channel_entry("DWI", None), train_demo.channel_entry("ADC", props)],
               "target_spacing_mm": [2.0, 2.0, 2.0], "patch_size": [64, 64, 64],
               "architecture": {"features_per_stage": list(features)}, "provenance": {"seed": name}}
        with open(os.path.join(d, "model.json"), "w") as f:
            json.dump(pkg, f)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(name.encode() * 10)  # stands in for the network: copied byte for byte
        return d

    def test_members_become_one_package_with_every_network(self):
        with tempfile.TemporaryDirectory() as root:
            a, b = self.member(root, "a"), self.member(root, "b", mean=594.0)
            out = os.path.join(root, "ens")
            os.makedirs(out)
            open(os.path.join(out, "stale.onnx"), "w").close()
            open(os.path.join(out, "cpu-fp32.engine"), "w").close()
            rc = ensemble_models.main(["--out", out, "--model-id", "ens-1", "--member", f"model={a}",
                                       "--member", f"second={b}"])
            self.assertEqual(rc, 0)
            with open(os.path.join(out, "model.json")) as f:
                pkg = json.load(f)
            self.assertEqual(pkg["networks"], ["model.onnx", "second.onnx"])
            self.assertEqual(pkg["model_id"], "ens-1")
            self.assertEqual(pkg["channels"][1]["intensity_properties"]["mean"], 593.0)  # the first member's
            self.assertEqual(sorted(os.listdir(out)), ["model.json", "model.onnx", "second.onnx"])
            with open(os.path.join(out, "second.onnx"), "rb") as f:
                self.assertEqual(f.read(), b"b" * 10)
            shifts = [m["normalization_shift_std"] for m in pkg["provenance"]["members"]]
            self.assertEqual(shifts[0], 0.0)
            self.assertAlmostEqual(shifts[1], 1.0 / 195.0, places=4)
            self.assertEqual(pkg["provenance"]["members"][1]["provenance"], {"seed": "b"})
            self.assertNotIn("postprocessing", pkg)  # not asked for: the box keeps flagged lesions

    def test_the_ensemble_states_its_postprocessing_and_never_inherits_a_members(self):
        with tempfile.TemporaryDirectory() as root:
            a, b = self.member(root, "a"), self.member(root, "b")
            with open(os.path.join(a, "model.json")) as f:
                pkg_a = json.load(f)
            pkg_a["postprocessing"] = {"implausible_lesions": "exclude"}
            with open(os.path.join(a, "model.json"), "w") as f:
                json.dump(pkg_a, f)
            out = os.path.join(root, "ens")
            self.assertNotIn("postprocessing", ensemble_models.build(out, "x", [("model", a), ("b", b)], 0.02))
            rc = ensemble_models.main(["--out", out, "--model-id", "x", "--member", f"model={a}",
                                       "--member", f"b={b}", "--implausible-lesions", "exclude"])
            self.assertEqual(rc, 0)
            with open(os.path.join(out, "model.json")) as f:
                self.assertEqual(json.load(f)["postprocessing"], {"implausible_lesions": "exclude"})
            with self.assertRaisesRegex(ensemble_models.EnsembleError, "keep, exclude-below-tissue-adc, exclude"):
                ensemble_models.build(out, "x", [("model", a), ("b", b)], 0.02, "drop")

    def test_incompatible_members_are_refused_with_the_reason(self):
        with tempfile.TemporaryDirectory() as root:
            a = self.member(root, "a")
            wide = self.member(root, "wide", features=(16, 32))
            far = self.member(root, "far", mean=640.0)  # 47 x 10^-6 mm^2/s: 0.24 std away
            out = os.path.join(root, "ens")
            with self.assertRaisesRegex(ensemble_models.EnsembleError, "member wide: architecture differs"):
                ensemble_models.build(out, "x", [("model", a), ("wide", wide)], 0.02)
            with self.assertRaisesRegex(ensemble_models.EnsembleError, "member far: .*0.24.* std"):
                ensemble_models.build(out, "x", [("model", a), ("far", far)], 0.02)
            with self.assertRaisesRegex(ensemble_models.EnsembleError, "at least two"):
                ensemble_models.build(out, "x", [("model", a)], 0.02)
            with self.assertRaisesRegex(ensemble_models.EnsembleError, "no model.json"):
                ensemble_models.build(out, "x", [("model", a), ("b", root)], 0.02)
            self.assertFalse(os.path.exists(out), "a refused ensemble must not touch the output")
            self.assertEqual(ensemble_models.main(["--out", out, "--model-id", "x", "--member", f"model={a}",
                                                   "--member", f"wide={wide}"]), 2)


def ndi_dilate(mask, iterations):
    from scipy import ndimage
    return ndimage.binary_dilation(mask, iterations=iterations)


class EvaluateModelSummary(unittest.TestCase):
    def test_volumes_in_range_counts_studies_with_a_lesion_ends_included(self):
        rows = [{"truth_ml": 10.0, "pred_ml": 5.0},    # 0.5x: in
                {"truth_ml": 10.0, "pred_ml": 20.0},   # 2x: in
                {"truth_ml": 10.0, "pred_ml": 4.99},   # under
                {"truth_ml": 1.0, "pred_ml": 2.01},    # over
                {"truth_ml": 0.0, "pred_ml": 3.0},     # lesion-free: not counted
                {"truth_ml": 2.0, "pred_ml": 0.0}]     # missed
        self.assertEqual(evaluate_model.volumes_in_range(rows), (2, 5))
        self.assertEqual(evaluate_model.volumes_in_range([]), (0, 0))


class TrainingRecipe(unittest.TestCase):
    def test_hd95_of_shifted_cube(self):
        a = np.zeros((20, 20, 20), bool)
        a[5:15, 5:15, 5:15] = True
        b = np.roll(a, 2, axis=0)
        self.assertAlmostEqual(train_demo.hd95_mm(a, a, (1, 1, 1)), 0.0)
        self.assertAlmostEqual(train_demo.hd95_mm(a, b, (2, 1, 1)), 4.0, delta=0.01)
        self.assertIsNone(train_demo.hd95_mm(a, np.zeros_like(a), (1, 1, 1)))

    def test_augmentation_keeps_image_and_label_aligned(self):
        # The label is the image thresholded; after any augmentation draw, the label must
        # still sit where the (mirrored/rotated/scaled) bright cube is.
        rng = np.random.default_rng(3)
        x = torch.zeros(1, 2, 32, 32, 32)
        x[:, :, 8:20, 10:24, 6:16] = 5.0
        y = (x[:, 0] > 0).long()
        for _ in range(30):
            xa, ya = train_demo.augment_batch(x.clone(), y.clone(), rng)
            self.assertEqual(tuple(xa.shape), (1, 2, 32, 32, 32))
            self.assertEqual(ya.dtype, torch.int64)
            lab = ya[0] > 0
            if lab.sum() < 50:
                continue
            inside = xa[0, 1][lab].mean()
            outside = xa[0, 1][~lab].mean()
            self.assertGreater(float(inside), float(outside) + 1.0)

    def test_cache_files_appear_whole_through_a_rename(self):
        # Two runs fill one preprocessing cache side by side; a reader must never find a
        # half-written .npy (it crashed a run once), so files appear only by os.replace.
        import unittest.mock as mock
        a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "k_data.npy")
            with mock.patch.object(train_demo.os, "replace", wraps=os.replace) as rep:
                train_demo.atomic_save(path, a)
            rep.assert_called_once()
            self.assertEqual(rep.call_args[0][1], path)
            np.testing.assert_array_equal(np.load(path), a)
            self.assertEqual(os.listdir(d), ["k_data.npy"])

    def test_one_fingerprint_for_members_trained_on_different_data(self):
        # Ensemble members trained on different host studies must share one ADC normalization
        # (tools/ensemble_models.py refuses a shift): --fingerprint-dr-seeds names the studies
        # whose lesions set it, whatever each member trains on.
        with tempfile.TemporaryDirectory() as d:
            for sub in ("phantoms/seed_1", "phantoms/seed_2", "dr/seed_4000", "dr/seed_4001", "dr/seed_5000"):
                os.makedirs(os.path.join(d, sub))
            base = dict(data_dir=d, train_seeds="1-2", fingerprint_dr_seeds="", val_seeds="", dr_val_seeds="",
                        negative_seeds="", dr_negative_seeds="")
            a = argparse.Namespace(**base, dr_train_seeds="4000")
            b = argparse.Namespace(**base, dr_train_seeds="5000")
            self.assertNotEqual(train_demo.fingerprint_folders(a), train_demo.fingerprint_folders(b))
            a.fingerprint_dr_seeds = b.fingerprint_dr_seeds = "4000-4001,5000"
            fa = train_demo.fingerprint_folders(a)
            self.assertEqual(fa, train_demo.fingerprint_folders(b))
            self.assertEqual([os.path.relpath(f, d) for f in fa],
                             ["phantoms/seed_1", "phantoms/seed_2", "dr/seed_4000", "dr/seed_4001", "dr/seed_5000"])
            a.fingerprint_dr_seeds = "4000,9500"  # a validation study never sets the normalization
            with self.assertRaisesRegex(SystemExit, "reserved"):
                train_demo.fingerprint_folders(a)
            a.fingerprint_dr_seeds = "4000-4003"
            with self.assertRaisesRegex(SystemExit, "seed_4002 missing \\(2 in all\\)"):
                train_demo.fingerprint_folders(a)

    def test_a_new_member_takes_the_fingerprint_of_the_package_it_joins(self):
        # --fingerprint-from: the ADC statistics come from the package's model.json, so the
        # ensemble tool accepts the new network beside the package's own.
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(SystemExit, "no model.json"):
                train_demo.package_adc_properties(d)
            props = {"mean": 592.9, "median": 553.9, "std": 194.65, "min": 0.0, "max": 2434.5,
                     "percentile_99_5": 1383.1, "percentile_00_5": 300.0}

            def write_package(adc_normalization):
                spec = {"channels": [{"name": "DWI", "normalization": "ZScoreNormalization"},
                                     {"name": "ADC", "normalization": adc_normalization,
                                      "intensity_properties": props}]}
                with open(os.path.join(d, "model.json"), "w") as f:
                    json.dump(spec, f)

            write_package("CTNormalization")
            self.assertEqual(train_demo.package_adc_properties(d), props)
            self.assertEqual(train_demo.channel_entry("ADC", train_demo.package_adc_properties(d))["intensity_properties"],
                             props)
            ct = argparse.Namespace(fingerprint_from=d, fingerprint_dr_seeds="", adc_normalization="ct")
            self.assertEqual(train_demo.adc_ct_properties(ct, d, lambda m: None), [None, props])
            # One source of the fingerprint at a time, and none for ZScore.
            both = argparse.Namespace(fingerprint_from=d, fingerprint_dr_seeds="4000", adc_normalization="ct")
            with self.assertRaisesRegex(SystemExit, "give one"):
                train_demo.adc_ct_properties(both, d, lambda m: None)
            zscore = argparse.Namespace(fingerprint_from=d, fingerprint_dr_seeds="", adc_normalization="zscore")
            with self.assertRaisesRegex(SystemExit, "no dataset fingerprint"):
                train_demo.adc_ct_properties(zscore, d, lambda m: None)
            zscore.fingerprint_from = ""
            self.assertIsNone(train_demo.adc_ct_properties(zscore, d, lambda m: None))
            write_package("ZScoreNormalization")
            with self.assertRaisesRegex(SystemExit, "no CTNormalization ADC channel"):
                train_demo.package_adc_properties(d)

    def test_keep_selects_the_best_validation_or_the_last_weights(self):
        # Validation Dice falls after the first check: "best" keeps iteration 2's weights,
        # "last" the final ones (nnU-Net's checkpoint_final), and the saved checkpoint holds them.
        import unittest.mock as mock
        rng = np.random.default_rng(0)
        data = rng.standard_normal((2, 16, 16, 16)).astype(np.float32)
        seg = (data[0] > 1.0).astype(np.uint8)
        weights = {}
        for keep, expect_kept in (("best", 2), ("last", 6)):
            dices = iter([0.9, 0.5, 0.4])
            args = argparse.Namespace(seed=1, features=[4, 8], lr=0.01, train_patch=[8, 8, 8], patch=[8, 8, 8],
                                      p_fg=0.5, batch=1, hard_stop_min=10.0, val_every=2, min_delta_dice=0.005,
                                      min_delta_hd95=1.0, patience=100, min_iterations=0, keep=keep)
            with tempfile.TemporaryDirectory() as run_dir, \
                    mock.patch.object(train_demo, "quick_validate",
                                      lambda *a, **k: {"dice": next(dices), "hd95": 10.0, "fp_ml": 0.0}):
                net, done, _, _, kept, history = train_demo.train(args, [(data, seg)], 6, lambda m: None, run_dir,
                                                                  val_cases=[])
                saved = torch.load(os.path.join(run_dir, "checkpoint.pt"))["net"]
            self.assertEqual((done, kept, len(history)), (6, expect_kept, 3), keep)
            for k, t in net.state_dict().items():
                self.assertTrue(torch.equal(saved[k], t), k)
            weights[keep] = net.state_dict()
        self.assertFalse(all(torch.equal(weights["best"][k], t) for k, t in weights["last"].items()))

    def test_ct_normalization_keeps_absolute_adc_where_zscore_does_not(self):
        # The same tissue (ADC 500, an infarct; 800, normal) in a small and a large head: ZScore
        # maps it to values that depend on how much background and CSF the volume holds,
        # CTNormalization to the same value, clipped to the foreground percentiles.
        props = {"mean": 600.0, "std": 200.0, "percentile_00_5": 300.0, "percentile_99_5": 1400.0}
        small = np.zeros((10, 10, 10), np.float32)
        small[2:8, 2:8, 2:8] = 800.0
        small[4, 4, 4] = 500.0
        large = np.full((10, 10, 10), 800.0, np.float32)
        large[:, :, :3] = 3000.0  # CSF
        large[4, 4, 4] = 500.0
        for vol in (small, large):
            ct = npp.ct_normalize(vol, props)
            self.assertAlmostEqual(float(ct[4, 4, 4]), -0.5, places=5)
            self.assertAlmostEqual(float(ct[5, 5, 5]), 1.0, places=5)
        self.assertAlmostEqual(float(npp.ct_normalize(small, props).min()), -1.5, places=5)  # 0 -> 300
        self.assertAlmostEqual(float(npp.ct_normalize(large, props).max()), 4.0, places=5)  # 3000 -> 1400
        z_small, z_large = npp.zscore_normalize(small)[4, 4, 4], npp.zscore_normalize(large)[4, 4, 4]
        self.assertGreater(abs(float(z_small - z_large)), 0.5)

    def test_ct_channel_is_used_by_preprocess_case(self):
        rng = np.random.default_rng(0)
        dwi = rng.uniform(50, 100, (20, 20, 20)).astype(np.float32)
        adc = np.full((20, 20, 20), 800.0, np.float32)
        props = {"mean": 600.0, "std": 200.0, "percentile_00_5": 300.0, "percentile_99_5": 1400.0}
        data, _, _ = npp.preprocess_case([dwi, adc], (2.0, 2.0, 2.0), (2.0, 2.0, 2.0),
                                         ct_properties=[None, props])
        np.testing.assert_allclose(data[1], 1.0, atol=1e-5)
        self.assertAlmostEqual(float(data[0].mean()), 0.0, places=4)  # DWI stays ZScore
        self.assertAlmostEqual(float(data[0].std()), 1.0, places=3)

    def test_foreground_intensity_properties(self):
        v = np.arange(1, 1001, dtype=np.float64)
        p = npp.foreground_intensity_properties(v)
        self.assertAlmostEqual(p["mean"], 500.5)
        self.assertAlmostEqual(p["percentile_00_5"], np.percentile(v, 0.5))
        self.assertAlmostEqual(p["percentile_99_5"], np.percentile(v, 99.5))
        self.assertEqual((p["min"], p["max"]), (1.0, 1000.0))

    def test_adc_unit_is_recognised_as_the_appliance_does(self):
        brain = np.zeros((8, 8, 8), np.float32)
        brain[2:6, 2:6, 2:6] = 800.0
        self.assertEqual(npp.adc_unit_scale(brain), 1.0)
        self.assertEqual(npp.adc_unit_scale(brain * 1e-3), 1e3)
        self.assertEqual(npp.adc_unit_scale(brain * 1e-6), 1e6)
        with self.assertRaises(ValueError):
            npp.adc_unit_scale(brain * 100)  # median 80000: not an ADC in any unit
        with self.assertRaises(ValueError):
            npp.adc_unit_scale(np.zeros((4, 4, 4), np.float32))

    def test_package_channels_say_how_the_adc_was_normalized(self):
        props = {"mean": 600.0, "std": 200.0, "percentile_00_5": 300.0, "percentile_99_5": 1400.0}
        adc = train_demo.channel_entry("ADC", props)
        self.assertEqual(adc["normalization"], "CTNormalization")
        self.assertEqual(adc["unit"], "1e-6 mm2/s")
        self.assertEqual(adc["intensity_properties"], props)
        self.assertEqual(train_demo.channel_entry("DWI", None)["normalization"], "ZScoreNormalization")

    def test_bf16_native_reads_cpu_flags(self):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        self.assertEqual(train_demo.bf16_native(), " avx512_bf16" in flags or " amx_bf16" in flags)


@unittest.skipUnless(os.path.exists(BINARY), f"{BINARY} not built")
class DemoModelOnUnseenDomainRandomizedStudies(unittest.TestCase):
    """The bundled model on phantom_dr studies from seeds never used in training or
    validation (>= 9900): infarcts found, a lesion-free brain left (almost) empty."""

    def segment(self, study, d):
        phantom_dr.write_study(study, d)
        out = os.path.join(d, "out")
        p = subprocess.run([BINARY, "segment", "--model", MODEL, "--image", os.path.join(d, "image_0000.nii.gz"),
                            "--image", os.path.join(d, "image_0001.nii.gz"), "--out", out],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr[-500:])
        m = subprocess.run([BINARY, "evaluate", "--pred", os.path.join(out, "lesion_mask.nii.gz"),
                            "--truth", os.path.join(d, "truth.nii.gz")], capture_output=True, text=True)
        self.assertEqual(m.returncode, 0, m.stderr)
        return json.loads(m.stdout)

    def test_lesion_free_brain_stays_far_below_the_old_models_volumes(self):
        # The model that learned one generator's look predicted 150-300 mL on such brains. On
        # 9911 (skull and scalp kept, poor fat suppression) every default so far calls fat at the
        # skull base (ADC 130-290): `-adc` 25 mL, `-hosts` 61 mL, the ensemble 20 mL; the
        # plausibility guard flags what lies below any brain tissue's ADC. The goal, < 2 mL, is
        # asserted on what the guard leaves unflagged (the ensemble: 0.0 mL on both); the total is
        # a regression guard (models/demo/TRAINING.md).
        for seed in (9910, 9911):
            with tempfile.TemporaryDirectory() as d:
                m = self.segment(phantom_dr.make_study(seed, lesions=0), d)
                with open(os.path.join(d, "out", "report.json")) as f:
                    p = json.load(f)["plausibility"]
                flagged = p["implausible_volume_ml"]
                # What the networks called: the mask, plus what the package's postprocessing
                # left out of it ("excluded").
                network_ml = p["predicted_lesion_volume_ml"]
                print(f"[ info ] phantom_dr {seed} lesion-free: {network_ml:.2f} mL predicted, "
                      f"{flagged:.2f} mL of it flagged implausible, {m['pred_volume_ml']:.2f} mL in the mask")
                self.assertLess(network_ml, 40.0, m)
                self.assertLess(network_ml - flagged, 2.0, m)
                self.assertAlmostEqual(m["pred_volume_ml"], network_ml - p["excluded_volume_ml"], places=2)
                # Issue 14's target on a lesion-free brain, on the mask the box reports (the default
                # package leaves out what lies below any brain tissue's ADC: 0.00 mL on both).
                self.assertLess(m["pred_volume_ml"], 2.0, m)

    def test_infarcts_are_found(self):
        dices = []
        for seed in (9920, 9921, 9922):
            with tempfile.TemporaryDirectory() as d:
                m = self.segment(phantom_dr.make_study(seed, lesions=2), d)
                print(f"[ info ] phantom_dr {seed}: Dice {m.get('dice')}, truth {m['truth_volume_ml']:.2f} mL, "
                      f"predicted {m['pred_volume_ml']:.2f} mL")
                dices.append(m.get("dice") or 0.0)
        self.assertGreater(float(np.mean(dices)), 0.5, dices)


if __name__ == "__main__":
    unittest.main()
