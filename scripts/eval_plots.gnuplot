# Plots of docs/results.md from the plot data of scripts/eval_report.py.
# Usage: gnuplot -e "out='DIR'" scripts/eval_plots.gnuplot   (run from the repo root)
set terminal pngcairo size 900,600 font "sans,11"
set datafile separator ","
set logscale y
set format y "10^{%L}"
set grid
set ylabel "mean KL divergence (nats)"

set output "docs/fidelity_kl_vs_bits.png"
set title "stories260K, 7 golden prompts: KL(full || handoff) over the next 64 tokens"
set xlabel "budget (average code bits per element)"
set logscale x 2
set xrange [1.9:17]
set xtics ("2" 2, "2.5" 2.5, "3" 3, "4" 4, "8" 8, "16 (fp16)" 16)
set key top right
plot out."/plot_bits.csv" using 1:2 with linespoints lw 2 pt 7 lc rgb "#9400d3" title "uniform, 1 hop", \
     "" using 1:3 with linespoints lw 2 pt 5 lc rgb "#009e73" title "adaptive, 1 hop", \
     "" using 1:4 with linespoints lw 2 pt 6 dt 2 lc rgb "#56b4e9" title "uniform, 10 hops", \
     "" using 1:5 with linespoints lw 2 pt 4 dt 2 lc rgb "#e69f00" title "adaptive, 10 hops"

set output "docs/fidelity_kl_vs_hops.png"
set title "stories260K, 7 golden prompts: KL after H hops (incremental cards)"
set xlabel "hops (handoffs)"
set xrange [0.9:11]
set xtics ("1" 1, "2" 2, "4" 4, "10" 10)
set key outside right
plot out."/plot_hops.csv" using 1:2 with linespoints lw 2 pt 7 lc rgb "#9400d3" title "uniform 4 bits", \
     "" using 1:3 with linespoints lw 2 pt 5 lc rgb "#009e73" title "adaptive 4 bits", \
     "" using 1:4 with linespoints lw 2 pt 6 dt 2 lc rgb "#56b4e9" title "uniform 3 bits", \
     "" using 1:5 with linespoints lw 2 pt 4 dt 2 lc rgb "#e69f00" title "adaptive 3 bits", \
     "" using 1:6 with linespoints lw 2 pt 2 dt 3 lc rgb "#d55e00" title "8 bits (both)"
