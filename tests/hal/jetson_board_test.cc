// The Jetson backend against a fake sysfs tree laid out like a Xavier NX on JetPack 5.
#include "hal/jetson_board.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "hal/board.h"

namespace hal {
namespace {
namespace fs = std::filesystem;

class JetsonBoardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hal_jetson_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    // Thermal zones, as on a Xavier NX (plus cooling devices, which are not zones).
    const char* zones[] = {"CPU-therm", "GPU-therm", "AUX-therm",
                           "AO-therm",  "PMIC-Die",  "thermal-fan-est"};
    const int temps[] = {45'500, 43'000, 44'000, 41'500, 100'000, 43'800};
    for (int i = 0; i < 6; ++i) {
      std::string zone = "sys/class/thermal/thermal_zone" + std::to_string(i);
      write(zone + "/type", std::string(zones[i]) + "\n");
      write(zone + "/temp", std::to_string(temps[i]) + "\n");
    }
    write("sys/class/thermal/cooling_device0/type", "pwm-fan\n");
    // INA3221 at i2c bus 7, address 0x40: three labelled channels and a summation channel
    // that has no current, plus the driver directory's own files.
    write("sys/bus/i2c/drivers/ina3221/bind", "");
    write("sys/bus/i2c/drivers/ina3221/uevent", "");
    std::string ina = "sys/bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon3/";
    write(ina + "name", "ina3221\n");
    write(ina + "in1_label", "VDD_IN\n");
    write(ina + "in1_input", "5064\n");
    write(ina + "curr1_input", "1432\n");
    write(ina + "in2_label", "VDD_CPU_GPU_CV\n");
    write(ina + "in2_input", "5056\n");
    write(ina + "curr2_input", "420\n");
    write(ina + "in3_label", "VDD_SOC\n");
    write(ina + "in3_input", "5064\n");
    write(ina + "curr3_input", "680\n");
    write(ina + "in4_input", "12\n");  // shunt voltage, no label
    write(ina + "in7_label", "sum of shunt voltages\n");
    write(ina + "in7_input", "40\n");
    // pwm-fan: the fan hwmon is found by name, not by number.
    write("sys/devices/platform/pwm-fan/hwmon/hwmon0/name", "other\n");
    write("sys/devices/platform/pwm-fan/hwmon/hwmon0/pwm1", "7\n");
    write("sys/devices/platform/pwm-fan/hwmon/hwmon1/name", "pwmfan\n");
    write("sys/devices/platform/pwm-fan/hwmon/hwmon1/pwm1", "120\n");
    write("sys/devices/gpu.0/load", "347\n");
    write("var/lib/nvpmodel/status", "pmode:0008\n");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  void write(const std::string& rel, const std::string& content) {
    fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
  }
  std::string read(const std::string& rel) {
    std::ifstream in(root_ / rel);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::unique_ptr<Board> board() {
    auto b = make_jetson_board(root_);
    EXPECT_TRUE(b.ok()) << b.status().to_string();
    return b.ok() ? std::move(b).value() : nullptr;
  }

  fs::path root_;
};

TEST_F(JetsonBoardTest, ListsThermalZonesByTypeInKernelOrder) {
  auto b = board();
  EXPECT_EQ(b->name(), "jetson-xavier-nx");
  EXPECT_EQ(b->thermal().zones(),
            (std::vector<std::string>{"CPU-therm", "GPU-therm", "AUX-therm", "AO-therm",
                                      "PMIC-Die", "thermal-fan-est"}));
}

TEST_F(JetsonBoardTest, OrdersZonesNumericallyNotAlphabetically) {
  write("sys/class/thermal/thermal_zone10/type", "Tboard\n");
  write("sys/class/thermal/thermal_zone10/temp", "30000\n");
  auto zones = board()->thermal().zones();
  ASSERT_EQ(zones.size(), 7u);
  EXPECT_EQ(zones.back(), "Tboard");
}

TEST_F(JetsonBoardTest, ReadsTemperatureInMilliCelsius) {
  auto b = board();
  auto cpu = b->thermal().temperature_mC("CPU-therm");
  ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
  EXPECT_EQ(*cpu, 45'500);
  EXPECT_EQ(*b->thermal().temperature_mC("PMIC-Die"), 100'000);
}

TEST_F(JetsonBoardTest, ReadsNegativeTemperature) {
  write("sys/class/thermal/thermal_zone2/temp", "-12500\n");
  EXPECT_EQ(*board()->thermal().temperature_mC("AUX-therm"), -12'500);
}

TEST_F(JetsonBoardTest, UnknownZoneIsNotFound) {
  auto t = board()->thermal().temperature_mC("NVME-therm");
  EXPECT_EQ(t.status().code(), base::Code::kNotFound);
}

TEST_F(JetsonBoardTest, SensorThatDisappearsIsMissingNotZero) {
  auto b = board();
  fs::remove(root_ / "sys/class/thermal/thermal_zone1/temp");
  auto t = b->thermal().temperature_mC("GPU-therm");
  EXPECT_EQ(t.status().code(), base::Code::kNotFound);
  EXPECT_NE(t.status().message().find("thermal_zone1/temp"), std::string::npos)
      << t.status().message();
}

TEST_F(JetsonBoardTest, GarbageReadingIsDataLoss) {
  write("sys/class/thermal/thermal_zone0/temp", "hot\n");
  EXPECT_EQ(board()->thermal().temperature_mC("CPU-therm").status().code(),
            base::Code::kDataLoss);
  write("sys/class/thermal/thermal_zone0/temp", "");
  EXPECT_EQ(board()->thermal().temperature_mC("CPU-therm").status().code(),
            base::Code::kDataLoss);
}

TEST_F(JetsonBoardTest, ListsLabelledIna3221ChannelsThatHaveACurrent) {
  EXPECT_EQ(board()->power().rails(),
            (std::vector<std::string>{"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}));
}

TEST_F(JetsonBoardTest, ReadsRailVoltageCurrentAndPower) {
  auto b = board();
  auto in = b->power().read(kRailModuleTotal);
  ASSERT_TRUE(in.ok()) << in.status().to_string();
  EXPECT_EQ(in->voltage_mV, 5064);
  EXPECT_EQ(in->current_mA, 1432);
  EXPECT_EQ(in->power_mW(), 5064 * 1432 / 1000);  // 7251 mW
  auto soc = b->power().read(kRailSoc);
  ASSERT_TRUE(soc.ok());
  EXPECT_EQ(soc->current_mA, 680);
  EXPECT_EQ(b->power().read(kRailCpuGpuCv)->voltage_mV, 5056);
}

TEST_F(JetsonBoardTest, UnknownRailIsNotFound) {
  EXPECT_EQ(board()->power().read("VDD_GPU").status().code(), base::Code::kNotFound);
}

TEST_F(JetsonBoardTest, BoardWithoutIna3221HasNoRails) {
  fs::remove_all(root_ / "sys/bus/i2c/drivers/ina3221");
  auto b = board();
  EXPECT_TRUE(b->power().rails().empty());
  auto r = b->power().read(kRailModuleTotal);
  EXPECT_EQ(r.status().code(), base::Code::kNotFound);
  EXPECT_NE(r.status().message().find("ina3221"), std::string::npos) << r.status().message();
}

TEST_F(JetsonBoardTest, FindsFanHwmonByNameAndReadsPwm) {
  auto pwm = board()->fan().pwm();
  ASSERT_TRUE(pwm.ok()) << pwm.status().to_string();
  EXPECT_EQ(*pwm, 120);
}

TEST_F(JetsonBoardTest, SetPwmWritesTheSysfsFile) {
  auto b = board();
  ASSERT_TRUE(b->fan().set_pwm(200).ok());
  EXPECT_EQ(read("sys/devices/platform/pwm-fan/hwmon/hwmon1/pwm1"), "200\n");
  EXPECT_EQ(*b->fan().pwm(), 200);
  EXPECT_EQ(read("sys/devices/platform/pwm-fan/hwmon/hwmon0/pwm1"), "7\n");
}

TEST_F(JetsonBoardTest, SetPwmOutOfRangeIsRejected) {
  auto b = board();
  EXPECT_EQ(b->fan().set_pwm(256).code(), base::Code::kInvalidArgument);
  EXPECT_EQ(b->fan().set_pwm(-1).code(), base::Code::kInvalidArgument);
  EXPECT_EQ(*b->fan().pwm(), 120);
}

TEST_F(JetsonBoardTest, BoardWithoutPwmFanHasANullFan) {
  fs::remove_all(root_ / "sys/devices/platform/pwm-fan/hwmon/hwmon1");
  auto b = board();
  EXPECT_EQ(b->fan().pwm().status().code(), base::Code::kNotFound);
  EXPECT_EQ(b->fan().set_pwm(10).code(), base::Code::kNotFound);
}

TEST_F(JetsonBoardTest, ReadsGpuLoadInPerMille) {
  auto b = board();
  EXPECT_EQ(*b->gpu().load_permille(), 347);
  write("sys/devices/gpu.0/load", "1001\n");
  EXPECT_EQ(b->gpu().load_permille().status().code(), base::Code::kDataLoss);
  fs::remove(root_ / "sys/devices/gpu.0/load");
  EXPECT_EQ(b->gpu().load_permille().status().code(), base::Code::kNotFound);
}

TEST_F(JetsonBoardTest, ReadsPowerModeFromNvpmodelStatus) {
  auto b = board();
  auto mode = b->power_mode().current();
  ASSERT_TRUE(mode.ok()) << mode.status().to_string();
  EXPECT_EQ(mode->id, 8);
  EXPECT_EQ(mode->name, "MODE_20W_6CORE");
  write("var/lib/nvpmodel/status", "fmode:quiet\npmode:0003\n");
  EXPECT_EQ(b->power_mode().current()->name, "MODE_10W_2CORE");
  write("var/lib/nvpmodel/status", "pmode:0042\n");
  EXPECT_EQ(b->power_mode().current()->name, "unknown");
  EXPECT_EQ(b->power_mode().current()->id, 42);
}

TEST_F(JetsonBoardTest, BadOrMissingNvpmodelStatusIsAnError) {
  auto b = board();
  write("var/lib/nvpmodel/status", "pmode:\n");
  EXPECT_EQ(b->power_mode().current().status().code(), base::Code::kDataLoss);
  write("var/lib/nvpmodel/status", "\n");
  EXPECT_EQ(b->power_mode().current().status().code(), base::Code::kDataLoss);
  fs::remove(root_ / "var/lib/nvpmodel/status");
  EXPECT_EQ(b->power_mode().current().status().code(), base::Code::kNotFound);
}

TEST_F(JetsonBoardTest, LedIsANullObjectThatAcceptsPatterns) {
  auto b = board();
  EXPECT_EQ(b->led().pattern(), LedPattern::kOff);
  EXPECT_TRUE(b->led().set_pattern(LedPattern::kBlink4Hz).ok());
  EXPECT_EQ(b->led().pattern(), LedPattern::kBlink4Hz);
}

TEST_F(JetsonBoardTest, MissingRootIsNotFound) {
  auto b = make_jetson_board(root_ / "nonexistent");
  EXPECT_EQ(b.status().code(), base::Code::kNotFound);
}

TEST_F(JetsonBoardTest, DetectBoardPicksJetsonWhenGpuAndIna3221Exist) {
  auto b = detect_board(root_);
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ((*b)->name(), "jetson-xavier-nx");
}

TEST_F(JetsonBoardTest, DetectBoardFallsBackToSimWithoutJetsonSysfs) {
  fs::remove_all(root_ / "sys/devices/gpu.0");
  auto b = detect_board(root_);
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ((*b)->name(), "sim");
}

TEST(XavierNxModeName, MatchesNvpmodelTable) {
  EXPECT_EQ(xavier_nx_mode_name(0), "MODE_15W_2CORE");
  EXPECT_EQ(xavier_nx_mode_name(8), "MODE_20W_6CORE");
  EXPECT_EQ(xavier_nx_mode_name(9), "unknown");
  EXPECT_EQ(xavier_nx_mode_name(-1), "unknown");
}

}  // namespace
}  // namespace hal
