#include "firmware/seg_writer.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include <dcmtk/config/osconfig.h>  // must precede the other DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmiod/cielabutil.h>
#include <dcmtk/dcmiod/iodmacro.h>
#include <dcmtk/dcmiod/iodreferences.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include "firmware/dicom_write_util.h"
#include "base/log.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

#define SB_DCMTK(expr, what) SB_DCMTK_CHECK("DICOM SEG", expr, what)

/// Patient, study and Frame of Reference by hand from the scanned metadata (fallback when the
/// source file cannot be imported).
base::Status set_hierarchy_by_hand(DcmSegmentation& seg, const image::DicomSeries& source) {
  const image::DicomStudyInfo& st = source.study;
  SB_DCMTK(seg.getPatient().setPatientName(st.patient_name, OFFalse), "PatientName");
  SB_DCMTK(seg.getPatient().setPatientID(st.patient_id, OFFalse), "PatientID");
  SB_DCMTK(seg.getPatient().setPatientBirthDate(st.patient_birth_date, OFFalse), "PatientBirthDate");
  SB_DCMTK(seg.getPatient().setPatientSex(st.patient_sex, OFFalse), "PatientSex");
  SB_DCMTK(seg.getStudy().setStudyInstanceUID(st.study_instance_uid, OFFalse), "StudyInstanceUID");
  SB_DCMTK(seg.getStudy().setStudyDate(st.study_date, OFFalse), "StudyDate");
  SB_DCMTK(seg.getStudy().setStudyTime(st.study_time, OFFalse), "StudyTime");
  SB_DCMTK(seg.getStudy().setStudyID(st.study_id, OFFalse), "StudyID");
  SB_DCMTK(seg.getStudy().setAccessionNumber(st.accession_number, OFFalse), "AccessionNumber");
  SB_DCMTK(seg.getStudy().setReferringPhysicianName(st.referring_physician_name, OFFalse), "ReferringPhysicianName");
  if (!st.study_description.empty()) {
    SB_DCMTK(seg.getStudy().setStudyDescription(st.study_description, OFFalse), "StudyDescription");
  }
  if (!source.frame_of_reference_uid.empty()) {
    SB_DCMTK(seg.getFrameOfReference().setFrameOfReferenceUID(source.frame_of_reference_uid, OFFalse),
             "FrameOfReferenceUID");
  }
  return base::ok_status();
}

base::Status build_and_save(const image::DicomSeries& source, const image::SliceStack& stack,
                            const image::VolumeU8& mask, const SegAlgorithm& algo, const std::string& tmp_path,
                            const SegWriteOptions& options) {
  const image::DicomInstance& first = stack.slices.front();
  const Uint16 rows = static_cast<Uint16>(stack.grid.dims[1]);
  const Uint16 cols = static_cast<Uint16>(stack.grid.dims[0]);
  const std::string version = algo.version.empty() ? "unknown" : algo.version;

  IODGeneralEquipmentModule::EquipmentInfo equipment(options.manufacturer.c_str(), options.model_name.c_str(),
                                                     options.device_serial_number.c_str(), version.c_str());
  ContentIdentificationMacro content("1", "STROKEBOX", "Acute ischemic lesion on DWI (automatic)",
                                     "strokebox^algorithm");
  DcmSegmentation* raw = nullptr;
  SB_DCMTK(DcmSegmentation::createBinarySegmentation(raw, rows, cols, equipment, content), "create");
  std::unique_ptr<DcmSegmentation> seg(raw);

  // Patient, study, Frame of Reference: copied from the source image.
  const OFCondition imported = seg->importFromSourceImage(first.path.c_str(), OFTrue);
  if (imported.bad()) {
    SB_LOG(kWarning) << "DICOM SEG: cannot import patient/study from " << first.path << " (" << imported.text()
                     << "); using the scanned metadata";
    SB_RETURN_IF_ERROR(set_hierarchy_by_hand(*seg, source));
  }
  if (source.frame_of_reference_uid.empty()) {
    return base::invalid_argument("the source series " + image::describe_series(source) +
                                  " has no FrameOfReferenceUID; a SEG cannot be placed on it");
  }

  // The new series.
  const int series_number = options.series_number > 0 ? options.series_number : source.series_number + 1000;
  SB_DCMTK(seg->getSeries().setSeriesInstanceUID(new_dicom_uid().c_str()), "SeriesInstanceUID");
  SB_DCMTK(seg->getSeries().setSeriesNumber(std::to_string(series_number).c_str()), "SeriesNumber");
  SB_DCMTK(seg->getSeries().setSeriesDescription(options.series_description.c_str()), "SeriesDescription");

  // The segment.
  CodeSequenceMacro category("49755003", "SCT", "Morphologically Altered Structure");
  CodeSequenceMacro type("55641003", "SCT", "Infarct");
  DcmSegment* segment_raw = nullptr;
  SB_DCMTK(DcmSegment::create(segment_raw, "Infarct", category, type, DcmSegTypes::SAT_AUTOMATIC, algo.name.c_str()),
           "segment");
  std::unique_ptr<DcmSegment> segment(segment_raw);
  SB_DCMTK(segment->setSegmentDescription("Acute ischemic infarct (DWI hyperintense, low ADC)"), "SegmentDescription");
  double L = 0, a = 0, b = 0;
  IODCIELabUtil::rgb2DicomLab(L, a, b, 1.0, 0.2, 0.1);  // red-orange overlay
  SB_DCMTK(segment->setRecommendedDisplayCIELabValue(static_cast<Uint16>(L), static_cast<Uint16>(a),
                                                     static_cast<Uint16>(b)),
           "RecommendedDisplayCIELabValue");
  AlgorithmIdentificationMacro& ident = segment->getSegmentationAlgorithmIdentification();
  // CID 7162 "Surface Processing Algorithm Families": DCM 123110 "Artificial Intelligence".
  SB_DCMTK(ident.getAlgorithmFamilyCode().set("123110", "DCM", "Artificial Intelligence"), "AlgorithmFamilyCode");
  SB_DCMTK(ident.setAlgorithmName(algo.name.c_str()), "AlgorithmName");
  SB_DCMTK(ident.setAlgorithmVersion(version.c_str()), "AlgorithmVersion");
  if (!algo.model_id.empty()) {
    SB_DCMTK(ident.setAlgorithmParameters(("model_id=" + algo.model_id).c_str()), "AlgorithmParameters");
  }
  Uint16 segment_number = 0;
  SB_DCMTK(seg->addSegment(segment.get(), segment_number), "addSegment");
  segment.release();  // owned by seg now

  // Shared functional groups: pixel measures and orientation.
  const auto& ps = *first.pixel_spacing_mm;
  const auto& iop = *first.image_orientation_patient;
  const double step_mm = stack.grid.affine.block<3, 1>(0, 2).norm();
  FGPixelMeasures measures;
  SB_DCMTK(measures.setPixelSpacing((format_ds(ps[0]) + "\\" + format_ds(ps[1])).c_str()), "PixelSpacing");
  SB_DCMTK(measures.setSliceThickness(format_ds(first.slice_thickness_mm > 0 ? first.slice_thickness_mm : step_mm).c_str()),
           "SliceThickness");
  SB_DCMTK(measures.setSpacingBetweenSlices(format_ds(step_mm).c_str()), "SpacingBetweenSlices");
  SB_DCMTK(seg->addForAllFrames(measures), "PixelMeasures");
  FGPlaneOrientationPatient orientation;
  SB_DCMTK(orientation.setImageOrientationPatient(format_ds(iop[0]).c_str(), format_ds(iop[1]).c_str(), format_ds(iop[2]).c_str(),
                                                  format_ds(iop[3]).c_str(), format_ds(iop[4]).c_str(), format_ds(iop[5]).c_str()),
           "ImageOrientationPatient");
  SB_DCMTK(seg->addForAllFrames(orientation), "PlaneOrientation");

  // Dimensions: (segment number, slice position), PS3.3 C.7.6.17.
  const std::string dimension_uid = new_dicom_uid();
  IODMultiframeDimensionModule& dims = seg->getDimensions();
  SB_DCMTK(dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dimension_uid.c_str(),
                                  DCM_SegmentIdentificationSequence, "ReferencedSegmentNumber"),
           "dimension index (segment)");
  SB_DCMTK(dims.addDimensionIndex(DCM_ImagePositionPatient, dimension_uid.c_str(), DCM_PlanePositionSequence,
                                  "ImagePositionPatient"),
           "dimension index (position)");
  auto organization = std::make_unique<IODMultiframeDimensionModule::DimensionOrganizationItem>();
  SB_DCMTK(organization->setDimensionOrganizationUID(dimension_uid.c_str()), "DimensionOrganizationUID");
  dims.getDimensionOrganizationSequence().push_back(organization.release());

  // One frame per sorted source slice.
  const size_t plane = static_cast<size_t>(rows) * cols;
  std::vector<Uint8> frame(plane);
  IODReferences references;
  for (size_t k = 0; k < stack.slices.size(); ++k) {
    const image::DicomInstance& slice = stack.slices[k];
    for (size_t p = 0; p < plane; ++p) frame[p] = mask.data[k * plane + p] != 0 ? 1 : 0;

    FGPlanePosPatient position;
    const auto& ipp = *slice.image_position_patient;
    SB_DCMTK(position.setImagePositionPatient(format_ds(ipp[0]).c_str(), format_ds(ipp[1]).c_str(), format_ds(ipp[2]).c_str()),
             "ImagePositionPatient");
    FGFrameContent content_fg;
    SB_DCMTK(content_fg.setDimensionIndexValues(segment_number, 0), "DimensionIndexValues");
    SB_DCMTK(content_fg.setDimensionIndexValues(static_cast<Uint32>(k + 1), 1), "DimensionIndexValues");
    ImageSOPInstanceReferenceMacro ref;
    SB_DCMTK(ref.setReferencedSOPClassUID(slice.sop_class_uid.c_str()), "ReferencedSOPClassUID");
    SB_DCMTK(ref.setReferencedSOPInstanceUID(slice.sop_instance_uid.c_str()), "ReferencedSOPInstanceUID");
    OFVector<ImageSOPInstanceReferenceMacro> refs;
    refs.push_back(ref);
    std::unique_ptr<FGDerivationImage> derivation(
        DcmSegmentation::createDerivationImageFG(refs, "Lesion segmentation of this DWI slice by strokebox"));
    if (!derivation) return base::internal_error("DICOM SEG: cannot create the Derivation Image functional group");

    OFVector<FGBase*> per_frame;
    per_frame.push_back(&position);
    per_frame.push_back(&content_fg);
    per_frame.push_back(derivation.get());
    SB_DCMTK(seg->addFrame(frame.data(), segment_number, per_frame), "addFrame " + std::to_string(k + 1));

    references.add(new IODImageReference(source.study.patient_id.c_str(), source.study.study_instance_uid.c_str(),
                                         source.series_instance_uid.c_str(), slice.sop_instance_uid.c_str(),
                                         slice.sop_class_uid.c_str()));
  }
  // Common Instance Reference Module: the referenced DWI series (PS3.3 C.12.2).
  OFString study_uid;
  seg->getStudy().getStudyInstanceUID(study_uid);
  seg->getCommonInstanceReference().addReferences(references, study_uid);

  DcmFileFormat file;
  SB_DCMTK(seg->writeDataset(*file.getDataset()), "build the dataset");
  // DCMTK 3.6.7 drops the trailing bits of the last frame when Rows x Columns x frames is not a
  // multiple of 8, so the Pixel Data is packed here: one bit per pixel, frames concatenated
  // without padding, least significant bit first (PS3.5 8.1.1, PS3.3 C.8.20.2). The mask's
  // memory order (i fastest, then j, then k) is exactly that frame order.
  std::vector<Uint8> packed((mask.data.size() + 7) / 8 + ((mask.data.size() + 7) / 8) % 2, 0);
  for (size_t v = 0; v < mask.data.size(); ++v) {
    if (mask.data[v] != 0) packed[v / 8] = static_cast<Uint8>(packed[v / 8] | (1u << (v % 8)));
  }
  SB_DCMTK(file.getDataset()->putAndInsertUint8Array(DCM_PixelData, packed.data(),
                                                      static_cast<unsigned long>(packed.size())),
           "Pixel Data");
  const OFCondition saved = file.saveFile(tmp_path.c_str(), EXS_LittleEndianExplicit);
  if (saved.bad()) return base::unavailable("cannot write " + tmp_path + ": " + saved.text());
  return base::ok_status();
}

}  // namespace

base::Status write_seg(const image::DicomSeries& source, const image::VolumeU8& mask, const SegAlgorithm& algo,
                       const std::string& path, const SegWriteOptions& options) {
  SB_ASSIGN_OR_RETURN(image::SliceStack stack, image::sort_slices(source));
  if (mask.grid.dims != stack.grid.dims || mask.data.size() != static_cast<size_t>(stack.grid.voxel_count())) {
    return base::invalid_argument(
        "write_seg: the mask is " + std::to_string(mask.grid.dims[0]) + " x " + std::to_string(mask.grid.dims[1]) +
        " x " + std::to_string(mask.grid.dims[2]) + " but the source series is " + std::to_string(stack.grid.dims[0]) +
        " x " + std::to_string(stack.grid.dims[1]) + " x " + std::to_string(stack.grid.dims[2]));
  }
  if (!mask.grid.same_as(stack.grid, 1e-3)) {
    return base::invalid_argument("write_seg: the mask's affine differs from the source series' geometry; "
                                  "it must be on the grid assemble_volume() returned");
  }
  if (options.manufacturer.empty() || options.model_name.empty() || options.device_serial_number.empty()) {
    return base::invalid_argument("write_seg: manufacturer, model name and device serial number must be set");
  }
  const std::string tmp_path = path + ".tmp";
  base::Status status;
  try {
    status = build_and_save(source, stack, mask, algo, tmp_path, options);
  } catch (const std::exception& e) {
    status = base::internal_error(std::string("DICOM SEG: ") + e.what());
  } catch (...) {
    status = base::internal_error("DICOM SEG: unknown exception");
  }
  std::error_code ec;
  if (!status.ok()) {
    fs::remove(tmp_path, ec);
    return status.with_context("cannot write " + path);
  }
  fs::rename(tmp_path, path, ec);
  if (ec) {
    fs::remove(tmp_path, ec);
    return base::unavailable("cannot write " + path + ": " + ec.message());
  }
  return base::ok_status();
}

}  // namespace firmware
