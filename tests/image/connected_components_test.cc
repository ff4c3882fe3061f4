// Tests of image/connected_components: 6- and 26-connectivity, label order, sizes, removal of
// small components.
#include "image/connected_components.h"

#include <gtest/gtest.h>

namespace image {
namespace {

VolumeU8 empty_mask(int64_t ni, int64_t nj, int64_t nk) {
  Grid g;
  g.dims = {ni, nj, nk};
  return VolumeU8(g, 0);
}

TEST(ConnectedComponents, CornerNeighboursJoinOnlyWith26Connectivity) {
  VolumeU8 m = empty_mask(3, 3, 3);
  m.at(0, 0, 0) = 1;
  m.at(1, 1, 1) = 1;  // touches (0,0,0) at a corner only
  m.at(2, 1, 1) = 1;  // face neighbour of (1,1,1)
  auto c26 = label_components(m, Connectivity::k26);
  ASSERT_TRUE(c26.ok());
  EXPECT_EQ(c26->count(), 1);
  EXPECT_EQ(c26->sizes, (std::vector<int64_t>{3}));
  auto c6 = label_components(m, Connectivity::k6);
  ASSERT_TRUE(c6.ok());
  EXPECT_EQ(c6->count(), 2);
  EXPECT_EQ(c6->sizes, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c6->labels.at(0, 0, 0), 1);
  EXPECT_EQ(c6->labels.at(1, 1, 1), 2);
  EXPECT_EQ(c6->labels.at(2, 1, 1), 2);
  EXPECT_EQ(c6->labels.at(1, 0, 0), 0);
}

TEST(ConnectedComponents, SeparateBlobsGetSizesInMemoryOrder) {
  VolumeU8 m = empty_mask(8, 4, 3);
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 5; i < 8; ++i) m.at(i, j, k) = 1;  // 12 voxels, first voxel index 5
  m.at(0, 3, 2) = 255;                                    // a single voxel, any non-zero value
  m.at(1, 0, 1) = 1;                                      // first voxel in k=1 at index 1 + 8*4
  auto cc = label_components(m);
  ASSERT_TRUE(cc.ok());
  ASSERT_EQ(cc->count(), 3);
  EXPECT_EQ(cc->sizes, (std::vector<int64_t>{12, 1, 1}));
  EXPECT_EQ(cc->labels.at(7, 1, 1), 1);
  EXPECT_EQ(cc->labels.at(1, 0, 1), 2);
  EXPECT_EQ(cc->labels.at(0, 3, 2), 3);
}

TEST(ConnectedComponents, EmptyMaskHasNoComponents) {
  auto cc = label_components(empty_mask(5, 5, 5));
  ASSERT_TRUE(cc.ok());
  EXPECT_EQ(cc->count(), 0);
}

TEST(ConnectedComponents, RemovesComponentsBelowTheMinimumSize) {
  VolumeU8 m = empty_mask(6, 1, 1);
  m.data = {1, 1, 1, 0, 1, 0};
  auto out = remove_small_components(m, 2);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->data, (std::vector<uint8_t>{1, 1, 1, 0, 0, 0}));
}

TEST(ConnectedComponents, RejectsDataThatDoesNotMatchTheGrid) {
  VolumeU8 m = empty_mask(2, 2, 2);
  m.data.resize(3);
  EXPECT_EQ(label_components(m).status().code(), base::Code::kInvalidArgument);
}

}  // namespace
}  // namespace image
