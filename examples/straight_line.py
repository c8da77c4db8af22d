k = 6
m = k + 7
q = 5
t = m - 4
b = q + 2
w = t + 8
print(w)
