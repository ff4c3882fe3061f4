// DICOM writer for phantom studies (see phantom.h). Placeholder until implemented.
#include "image/phantom.h"

namespace image {

base::Status write_phantom_dicom(const PhantomStudy&, const std::string&) {
  return base::unimplemented("DICOM output of phantoms is not implemented yet");
}

}  // namespace image
