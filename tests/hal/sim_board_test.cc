// The simulated board: scriptable state, fault injection, and the Board null objects.
#include "hal/sim_board.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "hal/board.h"

namespace hal {
namespace {

TEST(SimBoard, StartsLikeAnIdleXavierNx) {
  auto sim = make_sim_board();
  const Board& b = *sim;
  EXPECT_EQ(b.name(), "sim");
  auto zones = b.thermal().zones();
  ASSERT_EQ(zones.size(), 6u);
  EXPECT_EQ(zones[0], "CPU-therm");
  EXPECT_EQ(zones[1], "GPU-therm");
  EXPECT_EQ(*b.thermal().temperature_mC("GPU-therm"), 40'000);
  EXPECT_EQ(b.power().rails(),
            (std::vector<std::string>{"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}));
  EXPECT_EQ(b.power().read(kRailModuleTotal)->power_mW(), 6'000);
  EXPECT_EQ(b.power_mode().current()->id, 8);
  EXPECT_EQ(b.power_mode().current()->name, "MODE_20W_6CORE");
  EXPECT_EQ(*b.gpu().load_permille(), 0);
  EXPECT_EQ(*b.fan().pwm(), 0);
  EXPECT_EQ(b.led().pattern(), LedPattern::kOff);
}

TEST(SimBoard, ScriptedTemperatureIsRead) {
  auto sim = make_sim_board();
  sim->set_temperature_mC("GPU-therm", 95'000);
  EXPECT_EQ(*sim->thermal().temperature_mC("GPU-therm"), 95'000);
  EXPECT_EQ(*sim->thermal().temperature_mC("CPU-therm"), 40'000);
}

TEST(SimBoard, NewZoneIsAppended) {
  auto sim = make_sim_board();
  sim->set_temperature_mC("NVME-therm", 51'000);
  EXPECT_EQ(sim->thermal().zones().back(), "NVME-therm");
  EXPECT_EQ(*sim->thermal().temperature_mC("NVME-therm"), 51'000);
}

TEST(SimBoard, UnknownZoneAndRailAreNotFound) {
  auto sim = make_sim_board();
  EXPECT_EQ(sim->thermal().temperature_mC("nope").status().code(), base::Code::kNotFound);
  EXPECT_EQ(sim->power().read("nope").status().code(), base::Code::kNotFound);
}

TEST(SimBoard, ScriptedRailGivesPowerAsProduct) {
  auto sim = make_sim_board();
  sim->set_rail(kRailModuleTotal, 5'080, 3'100);
  auto r = sim->power().read(kRailModuleTotal);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->voltage_mV, 5'080);
  EXPECT_EQ(r->current_mA, 3'100);
  EXPECT_EQ(r->power_mW(), 15'748);
}

TEST(SimBoard, ScriptedGpuLoadAndPowerMode) {
  auto sim = make_sim_board();
  sim->set_gpu_load_permille(990);
  sim->set_power_mode(3, "MODE_10W_2CORE");
  EXPECT_EQ(*sim->gpu().load_permille(), 990);
  EXPECT_EQ(sim->power_mode().current()->id, 3);
  EXPECT_EQ(sim->power_mode().current()->name, "MODE_10W_2CORE");
}

TEST(SimBoard, MissingSensorDisappearsAndReadsNotFound) {
  auto sim = make_sim_board();
  sim->inject_fault("GPU-therm", SimFault::kMissing);
  auto zones = sim->thermal().zones();
  EXPECT_EQ(std::count(zones.begin(), zones.end(), "GPU-therm"), 0);
  EXPECT_EQ(zones.size(), 5u);
  EXPECT_EQ(sim->thermal().temperature_mC("GPU-therm").status().code(), base::Code::kNotFound);

  sim->inject_fault(kRailSoc, SimFault::kMissing);
  EXPECT_EQ(sim->power().rails().size(), 2u);
  EXPECT_EQ(sim->power().read(kRailSoc).status().code(), base::Code::kNotFound);

  sim->inject_fault("GPU-therm", SimFault::kNone);
  EXPECT_EQ(*sim->thermal().temperature_mC("GPU-therm"), 40'000);
  sim->clear_faults();
  EXPECT_EQ(sim->power().rails().size(), 3u);
}

TEST(SimBoard, FailingSensorsReadUnavailable) {
  auto sim = make_sim_board();
  for (std::string_view s : {std::string_view("CPU-therm"), kRailModuleTotal, kSimFan,
                             kSimGpuLoad, kSimPowerMode}) {
    sim->inject_fault(s, SimFault::kError);
  }
  EXPECT_EQ(sim->thermal().zones().size(), 6u);  // present, but failing
  EXPECT_EQ(sim->thermal().temperature_mC("CPU-therm").status().code(),
            base::Code::kUnavailable);
  EXPECT_EQ(sim->power().read(kRailModuleTotal).status().code(), base::Code::kUnavailable);
  EXPECT_EQ(sim->fan().pwm().status().code(), base::Code::kUnavailable);
  EXPECT_EQ(sim->fan().set_pwm(100).code(), base::Code::kUnavailable);
  EXPECT_EQ(sim->gpu().load_permille().status().code(), base::Code::kUnavailable);
  EXPECT_EQ(sim->power_mode().current().status().code(), base::Code::kUnavailable);
  EXPECT_TRUE(sim->power().read(kRailSoc).ok());
}

TEST(SimBoard, FanDutyWrittenByFirmwareIsVisible) {
  auto sim = make_sim_board();
  Board& b = *sim;
  ASSERT_TRUE(b.fan().set_pwm(kFanPwmMax).ok());
  EXPECT_EQ(sim->fan_pwm(), 255);
  EXPECT_EQ(b.fan().set_pwm(256).code(), base::Code::kInvalidArgument);
  EXPECT_EQ(sim->fan_pwm(), 255);
}

TEST(SimBoard, LedPatternIsReadableByTests) {
  auto sim = make_sim_board();
  Board& b = *sim;
  ASSERT_TRUE(b.led().set_pattern(LedPattern::kBlink1Hz).ok());
  EXPECT_EQ(sim->led_pattern(), LedPattern::kBlink1Hz);
  sim->inject_fault(kSimLed, SimFault::kError);
  EXPECT_EQ(b.led().set_pattern(LedPattern::kOn).code(), base::Code::kUnavailable);
  EXPECT_EQ(sim->led_pattern(), LedPattern::kBlink1Hz);
}

TEST(SimBoard, ReadsAndWritesFromSeveralThreads) {
  auto sim = make_sim_board();
  std::atomic<bool> bad{false};
  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i) sim->set_temperature_mC("CPU-therm", 40'000 + i);
  });
  std::thread reader([&] {
    for (int i = 0; i < 2000; ++i) {
      auto t = sim->thermal().temperature_mC("CPU-therm");
      if (!t.ok() || *t < 40'000 || *t >= 42'000) bad = true;
    }
  });
  writer.join();
  reader.join();
  EXPECT_FALSE(bad);
  EXPECT_EQ(*sim->thermal().temperature_mC("CPU-therm"), 41'999);
}

TEST(Board, AbsentDevicesAreNullObjects) {
  Board b("bare", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
  EXPECT_TRUE(b.thermal().zones().empty());
  EXPECT_EQ(b.thermal().temperature_mC("CPU-therm").status().code(), base::Code::kNotFound);
  EXPECT_TRUE(b.power().rails().empty());
  EXPECT_EQ(b.power().read(kRailModuleTotal).status().code(), base::Code::kNotFound);
  EXPECT_EQ(b.fan().pwm().status().code(), base::Code::kNotFound);
  EXPECT_EQ(b.power_mode().current().status().code(), base::Code::kNotFound);
  EXPECT_EQ(b.gpu().load_permille().status().code(), base::Code::kNotFound);
  EXPECT_TRUE(b.led().set_pattern(LedPattern::kOn).ok());
  EXPECT_EQ(b.led().pattern(), LedPattern::kOn);
}

TEST(RailReading, PowerIsVoltageTimesCurrentInMilliwatts) {
  EXPECT_EQ((RailReading{5'000, 2'000}.power_mW()), 10'000);
  EXPECT_EQ((RailReading{19'000, 3'000}.power_mW()), 57'000);
  EXPECT_EQ((RailReading{1, 999}.power_mW()), 0);
  // No 32-bit overflow for large products.
  EXPECT_EQ((RailReading{2'000'000, 2'000'000}.power_mW()), 4'000'000'000);
}

TEST(LedPatternName, IsStable) {
  EXPECT_EQ(led_pattern_name(LedPattern::kOff), "off");
  EXPECT_EQ(led_pattern_name(LedPattern::kBlink4Hz), "blink_4hz");
}

}  // namespace
}  // namespace hal
